"""The captioning / open-ended VQA recipe end to end on generated data: a multi-task run of the generator (image
captions, sound captions, answers), its evaluation beside the baselines, the saved folder in the stock
`image-text-to-text` pipeline, and the batches it trains on."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from recipes.data.captioning import GenerationCollator, most_common_answer, rows_with
from tests.runs import ENV, REPO
from tests.tiny import save_tiny_decoder, save_tiny_vqa_dataset, tiny_gated_xattn_processor

TINY_GENERATOR = REPO / "recipes" / "configs" / "gated_xattn_tiny_test.yaml"


@pytest.fixture(scope="module")
def assets(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("generator")
    return {
        "decoder": save_tiny_decoder(root / "decoder"),
        "audio": tiny_run["audio"],
        "image": tiny_run["image"],
        "captions": tiny_run["dataset"],
        "vqa": save_tiny_vqa_dataset(root / "vqa"),
        "retriever": tiny_run["run"],
    }


def run(script, *arguments):
    result = subprocess.run([sys.executable, script, *map(str, arguments)], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def generator_run(assets, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "gated_xattn"
    result = run(
        "recipes/train_captioning.py", TINY_GENERATOR, "--text_decoder", assets["decoder"], "--audio_tower",
        assets["audio"], "--image_tower", assets["image"], "--dataset_name", assets["captions"],
        "--vqa_dataset_name", assets["vqa"], "--output_dir", output,
    )  # fmt: skip
    return output, result


def test_a_multitask_run_trains_and_scores_every_task(generator_run):
    output, result = generator_run
    logs = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in logs if "loss" in line]
    assert len(losses) == 2 * (16 + 16 + 24) // 4  # two epochs of single-task batches of 4, every task
    assert any("eval_loss" in line for line in logs)
    results = json.loads((output / "eval_results.json").read_text())["results"]["test"]
    for task in ("image_captioning", "audio_captioning"):
        scores = results[task]
        assert scores["num_rows"] == 8 and len(scores["predictions"]) == 8
        assert {"bleu_4", "meteor", "rouge_l", "cider_d"} <= set(scores)
    vqa = results["vqa"]
    assert vqa["num_rows"] == 9 and {"accuracy_yes_no", "accuracy_number", "accuracy_other"} <= set(vqa)
    assert (output / "loss.png").stat().st_size > 0 and (output / "examples.png").stat().st_size > 0
    assert "image_captioning" in result.stdout and "cider_d" in result.stdout


def test_the_run_folder_has_a_model_card_with_the_measured_figures(generator_run):
    from huggingface_hub import ModelCard

    output, _ = generator_run
    card = ModelCard.load(output / "README.md")
    results = json.loads((output / "eval_results.json").read_text())["results"]["test"]
    index = {(r.task_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert index[("image-to-text", "cider_d")] == pytest.approx(results["image_captioning"]["cider_d"])
    assert index[("audio-text-to-text", "bleu_4")] == pytest.approx(results["audio_captioning"]["bleu_4"])
    assert index[("visual-question-answering", "accuracy")] == pytest.approx(results["vqa"]["accuracy"])
    assert card.data.pipeline_tag == "image-text-to-text" and "image-text-to-text" in card.text


def test_training_moves_the_gates_and_the_saved_folder_reloads(generator_run):
    from transformers import AutoModelForImageTextToText

    output, _ = generator_run
    model = AutoModelForImageTextToText.from_pretrained(output, trust_remote_code=True)
    gates = [block.attention_gate.item() for block in model.model.gated_cross_attention.blocks.values()]
    assert all(gate != 0.0 for gate in gates), gates  # they start at 0; training opened them
    assert not any("lora_" in name for name, _ in model.named_parameters())  # LoRA merged into the decoder


def test_the_stock_pipeline_captions_and_answers_with_the_saved_folder(generator_run):
    from transformers import pipeline

    output, _ = generator_run
    captioner = pipeline("image-text-to-text", model=str(output), trust_remote_code=True)
    image = Image.new("RGB", (48, 40), (220, 30, 30))
    caption = captioner(images=image, text="Describe the image.", max_new_tokens=5, return_full_text=False)
    assert isinstance(caption[0]["generated_text"], str)
    chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "what colour is it?"}]}]  # fmt: skip
    answer = captioner(text=chat, max_new_tokens=5)
    assert answer[0]["generated_text"][-1]["role"] == "assistant"
    # a sound goes through the same pipeline as an audio item of the chat
    wave = __import__("numpy").random.default_rng(0).standard_normal(16000).astype("float32") * 0.1
    sound = [{"role": "user", "content": [{"type": "audio", "audio": wave, "sampling_rate": 16000}, {"type": "text", "text": "Describe the sound."}]}]  # fmt: skip
    assert isinstance(captioner(text=sound, max_new_tokens=5)[0]["generated_text"][-1]["content"], str)
    # the pipeline gives what generate() gives on the processor's inputs
    processor, model = captioner.processor, captioner.model
    inputs = processor(images=[image], text=["Describe the image."])
    tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    expected = processor.batch_decode(tokens[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    assert caption[0]["generated_text"] == expected


def test_the_base_model_loads_from_a_generator_folder(generator_run):
    from transformers import AutoModel, AutoModelForImageTextToText

    output, _ = generator_run
    base = AutoModel.from_pretrained(output, trust_remote_code=True)
    full = AutoModelForImageTextToText.from_pretrained(output, trust_remote_code=True)
    assert type(base).__name__ == "GatedXAttnModel"
    for name, value in base.state_dict().items():
        torch.testing.assert_close(value, full.model.state_dict()[name], rtol=0, atol=0)


def test_evaluation_puts_the_baselines_beside_the_model(generator_run, assets, tmp_path):
    output, _ = generator_run
    result = run(
        "recipes/evaluate_captioning.py", "--model", output, "--baselines", "--retriever", assets["retriever"],
        "--output_dir", tmp_path, "--max_new_tokens", 6,
    )  # fmt: skip
    results = json.loads((tmp_path / "captioning_results.json").read_text())["results"]
    for task in ("image_captioning", "audio_captioning"):
        assert set(results[task]) == {"gated cross-attention generator", "frozen decoder, no media",
                                      "retrieval: nearest training caption (CMAN)"}  # fmt: skip
    assert set(results["vqa"]) >= {"gated cross-attention generator", "frozen decoder, no media"}
    # the model's figures equal those of the run's own evaluation (same rows, greedy)
    run_results = json.loads((output / "eval_results.json").read_text())["results"]["test"]
    assert results["image_captioning"]["gated cross-attention generator"]["predictions"] == run_results["image_captioning"]["predictions"]  # fmt: skip
    # the retrieval baseline returns training captions, verbatim
    train_captions = set(__import__("datasets").load_from_disk(str(assets["captions"]))["train"]["text"])
    assert (
        set(results["image_captioning"]["retrieval: nearest training caption (CMAN)"]["predictions"])
        <= train_captions
    )
    assert (tmp_path / "examples.png").stat().st_size > 0 and "frozen decoder" in result.stdout


# ------------------------------------------------------------------------------------------------------ batches
def test_the_collator_puts_labels_on_the_target_only(tmp_path):
    processor = tiny_gated_xattn_processor(tmp_path)
    rows = [{"question": "what colour is it?", "answers": ["red"] * 9 + ["dark"], "image": Image.new("RGB", (8, 8))},
            {"question": "is it a circle?", "answers": ["no"] * 10, "image": Image.new("RGB", (8, 8))}]  # fmt: skip
    batch = GenerationCollator(processor, "vqa", text_column="question")(rows)
    for row, answer in enumerate(["red", "no"]):
        target = batch["labels"][row][batch["labels"][row] != -100]
        assert processor.tokenizer.decode(target) == answer + "<|im_end|>"
        assert batch["attention_mask"][row, -1] == 1  # left padding: every row ends at the last column
    assert batch["pixel_values"].shape[0] == 2 and torch.equal(batch["input_ids"][batch["labels"] != -100],
                                                               batch["labels"][batch["labels"] != -100])  # fmt: skip


def test_most_common_answer_and_rows_with_a_sound():
    import datasets

    assert most_common_answer(["two", "2", "2", "two"]) == "two"  # a tie goes to the first given
    dataset = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "sound": [None, "x", None]})
    assert rows_with(dataset, "sound")["text"] == ["b"]


def test_a_row_without_its_sound_is_an_error_naming_it(tmp_path):
    processor = tiny_gated_xattn_processor(tmp_path)
    collator = GenerationCollator(processor, "audio_captioning", media_column="sound")
    with pytest.raises(Exception, match="Row dog-3.*'sound'.*no sound"):
        collator([{"id": "dog-3", "text": "a dog barks", "sound": None}])


def test_the_gates_get_their_own_learning_rate_and_no_weight_decay(tmp_path):
    from modeling.gated_xattn import GatedXAttnForConditionalGeneration
    from recipes.training.arguments import CaptioningTrainingArguments
    from recipes.training.generation import GeneratorTrainer
    from tests.tiny import tiny_gated_xattn_config

    model = GatedXAttnForConditionalGeneration(tiny_gated_xattn_config())
    args = CaptioningTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1,
                                       gate_learning_rate=0.05, use_cpu=True, report_to="none")  # fmt: skip
    optimizer = GeneratorTrainer(model=model, args=args).create_optimizer()
    gates = {id(p) for n, p in model.named_parameters() if n.endswith(("attention_gate", "ffn_gate"))}
    assert len(gates) == 4
    (gate_group,) = [g for g in optimizer.param_groups if {id(p) for p in g["params"]} & gates]
    assert {id(p) for p in gate_group["params"]} == gates
    assert gate_group["lr"] == 0.05 and gate_group["weight_decay"] == 0.0
    others = [p for g in optimizer.param_groups if g is not gate_group for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(others) + len(gates) == len(trainable)
    assert all(g["lr"] == 1e-3 for g in optimizer.param_groups if g is not gate_group)


def test_a_second_run_on_the_folder_resumes_from_its_last_checkpoint(generator_run, assets, tmp_path):
    """Two epochs done; asked for three, the run continues from the epoch-2 checkpoint instead of starting over."""
    import shutil

    output, _ = generator_run
    resumed = tmp_path / "resumed"
    shutil.copytree(output, resumed)
    result = run(
        "recipes/train_captioning.py", TINY_GENERATOR, "--text_decoder", assets["decoder"], "--audio_tower",
        assets["audio"], "--image_tower", assets["image"], "--dataset_name", assets["captions"],
        "--vqa_dataset_name", assets["vqa"], "--output_dir", resumed, "--num_train_epochs", 3,
    )  # fmt: skip
    assert "Resuming from the last complete checkpoint" in result.stdout + result.stderr
    state = json.loads((resumed / "trainer_state.json").read_text())
    steps_per_epoch = (16 + 16 + 24) // 4
    assert state["global_step"] == 3 * steps_per_epoch
    losses = [line for line in state["log_history"] if "loss" in line and "eval_loss" not in line]
    assert len(losses) == 3 * steps_per_epoch  # every step logged once: nothing was trained twice
    # train_log.jsonl is appended to: the second run trained the third epoch only
    logged = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in logged if "loss" in line and "eval_loss" not in line]
    assert steps == list(range(1, 3 * steps_per_epoch + 1))
