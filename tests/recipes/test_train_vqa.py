"""The matching / VQA recipe end to end on generated data: a multi-task run (VQA and pairs interleaved), a matching
run of the other family with re-ranking of a trained CMAN's results, and the batches it trains on."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoModelForPreTraining, AutoModelForVisualQuestionAnswering, AutoProcessor

from recipes.data.matching import (
    MultiTaskDataset,
    PairCollator,
    TaskBatchSampler,
    VqaCollator,
    soft_score_targets,
)
from recipes.data.vqa import answer_vocabulary
from tests.runs import ENV, REPO
from tests.tiny import save_tiny_pretrained_towers, save_tiny_retrieval_dataset, save_tiny_vqa_dataset

TINY_MATCHING = REPO / "recipes" / "configs" / "matching_tiny_test.yaml"
TINY_CROSS_ATTENTION = {
    "cross_attention_config": {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "max_position_embeddings": 64, "dropout": 0.0,
    },
    "projection_dim": 16,
}  # fmt: skip


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("matching")
    towers = save_tiny_pretrained_towers(root / "towers")
    return {
        **towers,
        "vqa": save_tiny_vqa_dataset(root / "vqa"),
        "pairs": save_tiny_retrieval_dataset(root / "pairs", {"train": 16, "validation": 8, "test": 8}),
    }


def run_recipe(assets, output_dir, *extra, expect_failure=False):
    command = [
        sys.executable, "recipes/train_vqa.py", str(TINY_MATCHING),
        "--text_tower", str(assets["text"]), "--audio_tower", str(assets["audio"]),
        "--image_tower", str(assets["image"]), "--dataset_name", str(assets["vqa"]),
        "--pairs_dataset_name", str(assets["pairs"]), "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    if expect_failure:
        assert result.returncode != 0
        return result
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def multitask_run(assets, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "early_fusion"
    result = run_recipe(assets, output)
    return output, result


def test_a_multitask_run_trains_both_tasks_and_reports_vqa_and_matching(multitask_run):
    output, result = multitask_run
    logs = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    train_lines = [line for line in logs if "loss" in line and "eval_loss" not in line]
    assert any("vqa_loss" in line for line in train_lines) and any("itm_loss" in line for line in train_lines)
    assert any("mlm_loss" in line and "mpm_loss" in line for line in train_lines)
    assert any("eval_vqa_score" in line for line in logs)
    results = json.loads((output / "eval_results.json").read_text())["results"]["test"]
    vqa = results["vqa"]
    assert vqa["num_questions"] == 9 and {"accuracy_yes_no", "accuracy_number", "accuracy_other"} <= set(vqa)
    # Chance by hand: yes/no questions have 2 training answers, one right for all 10 annotators -> 1/2.
    assert vqa["chance"]["accuracy_yes_no"] == pytest.approx(0.5)
    assert results["matching"]["num_pairs"] == 16 and 0.0 <= results["matching"]["accuracy"] <= 1.0
    assert "VQA accuracy on test" in result.stdout and "Image-text matching on test" in result.stdout
    assert (output / "attention.png").stat().st_size > 0 and (output / "loss.png").stat().st_size > 0


def test_the_saved_answering_model_reloads_with_its_vocabulary_and_matching_head(multitask_run, assets):
    output, _ = multitask_run
    model = AutoModelForVisualQuestionAnswering.from_pretrained(output, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(output, trust_remote_code=True)
    assert set(model.config.label2id) >= {"yes", "no", "red"} and model.config.multitask
    assert model.itm_head is not None  # multi-task: the matching head is saved too
    matching = AutoModelForPreTraining.from_pretrained(output, trust_remote_code=True)
    assert type(matching).__name__ == "EarlyFusionForImageTextMatching"
    inputs = processor(
        text=["is it a circle?"], images=[Image.new("RGB", (40, 40), "red")], return_tensors="pt"
    )
    with torch.no_grad():
        assert model(**inputs).logits.shape == (1, len(model.config.label2id))


def test_a_matching_run_of_the_cross_attention_family_reranks_a_cman_run(assets, tiny_run, tmp_path):
    output = tmp_path / "cross_attention"
    run_recipe(
        assets, output, "--model_type", "cross_attention", "--model_config", json.dumps(TINY_CROSS_ATTENTION),
        "--tasks", "matching", "--pairs_dataset_name", str(tiny_run["dataset"]), "--rerank_with",
        str(tiny_run["run"]), "--metric_for_best_model", "loss",
    )  # fmt: skip
    results = json.loads((output / "eval_results.json").read_text())["results"]["test"]
    assert "vqa" not in results
    rerank = results["rerank"]
    assert rerank["top_k"] == 4 and rerank["num_items"] == 8
    # The retriever's own ranking before re-ranking is the retrieval evaluation's (same embeddings, same positives).
    cman = json.loads((tiny_run["run"] / "eval_results.json").read_text())["results"]["test"]["directions"]
    for direction in ("text_to_image", "image_to_text"):
        assert rerank[direction]["before"]["R@1"] == pytest.approx(cman[direction]["R@1"], abs=1e-6)
        # Re-ranking moves rows only inside the top 4: R@K for K >= 4 cannot change.
        assert rerank[direction]["after"]["R@5"] == pytest.approx(rerank[direction]["before"]["R@5"])


def test_bad_task_settings_are_refused_with_the_fix(assets, tmp_path):
    result = run_recipe(assets, tmp_path / "bad", "--tasks", "vqa", "--dataset_name", "", expect_failure=True)
    assert "needs `dataset_name`" in result.stderr
    result = run_recipe(assets, tmp_path / "bad2", "--tasks", "captioning", expect_failure=True)
    assert "tasks must be a non-empty subset" in result.stderr


# ------------------------------------------------------------------------------------------------- batches
def test_soft_scores_and_the_vocabulary_follow_vqa_v2():
    vocabulary = answer_vocabulary([{"answers": ["Dog", "dog", "cat"]}, {"answers": ["dog", "two"]}])
    assert vocabulary == ["dog", "2", "cat"]  # by count, then alphabetically; number words as digits
    label2id = {a: i for i, a in enumerate(vocabulary)}
    # min(1, count / 3): dog 3 times -> 1; 'two' and '2' twice -> 2/3; cat once -> 1/3; 'bird' is not in it.
    target = soft_score_targets(["dog", "Dog.", "the dog", "cat", "bird", "two", "2"], label2id)
    torch.testing.assert_close(target, torch.tensor([1.0, 2 / 3, 1 / 3]))


def test_the_task_sampler_serves_single_task_batches_covering_each_task(assets):
    import datasets

    vqa = datasets.load_from_disk(str(assets["vqa"]))["train"]
    pairs = datasets.load_from_disk(str(assets["pairs"]))["train"]
    dataset = MultiTaskDataset({"vqa": vqa, "matching": pairs})
    sampler = TaskBatchSampler(dataset, batch_size=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 24 // 4 + 16 // 4
    for batch in batches:
        assert len({dataset.task_of(i) for i in batch}) == 1 and len(batch) == 4
    assert sorted(i for b in batches for i in b) == list(range(40))
    assert [dataset.task_of(b[0]) for b in batches] != sorted(
        dataset.task_of(b[0]) for b in batches
    )  # interleaved
    sampler.set_epoch(1)
    assert list(sampler) != batches and list(TaskBatchSampler(dataset, 4, seed=0)) == batches


def test_the_collators_blank_images_for_the_question_only_baseline_and_mask_text_for_mlm(assets, tmp_path):
    import datasets

    from tests.tiny import tiny_processor

    processor = tiny_processor(tmp_path / "processor")
    vqa = datasets.load_from_disk(str(assets["vqa"]))["train"]
    rows = [vqa[i] for i in range(4)]
    label2id = {a: i for i, a in enumerate(answer_vocabulary(vqa))}
    full = VqaCollator(processor, label2id)(rows)
    blank = VqaCollator(processor, label2id, question_only=True)(rows)
    assert full["labels"].shape == (4, len(label2id)) and torch.equal(full["input_ids"], blank["input_ids"])
    assert not torch.equal(full["pixel_values"], blank["pixel_values"])
    assert torch.equal(blank["pixel_values"][0], blank["pixel_values"][1])  # every image the same grey
    pairs = datasets.load_from_disk(str(assets["pairs"]))["train"]
    batch = PairCollator(processor, mlm_probability=0.5)([pairs[i] for i in range(4)])
    masked = batch["mlm_labels"] != -100
    assert masked.any() and batch["return_loss"] is True
    assert torch.equal(batch["mlm_labels"][masked], batch["input_ids"][masked])
    assert not (masked & ~batch["attention_mask"].bool()).any()  # padding is never a target
