"""End-to-end tests of the retrieval recipes on a tiny CMAN and a dataset generated in the test."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipes.training.arguments import DataArguments, ModelArguments, RetrievalTrainingArguments
from recipes.training.trainer import last_complete_checkpoint
from recipes.utils.arguments import parse_recipe_arguments
from tests.runs import ENV, REPO, TINY_CONFIG, kill_after_checkpoint, logged_losses, recipe_args, run_ok
from tests.tiny import save_tiny_pretrained_towers, save_tiny_retrieval_dataset, save_tiny_whisper


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("assets")
    towers = save_tiny_pretrained_towers(root / "towers")
    return {
        **towers,
        "whisper": save_tiny_whisper(root / "towers" / "whisper"),
        "dataset": save_tiny_retrieval_dataset(root / "dataset"),
    }


run = run_ok


def evaluate_elsewhere(assets, output_dir: Path, tmp_path: Path) -> dict:
    """Another directory, another process, only the saved folder: `evaluate_retrieval.py --check_against` must find
    the stored test figures again. Returns the recomputed results of `test`."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run([sys.executable, str(REPO / "recipes/evaluate_retrieval.py"), "--model", str(output_dir),
                  "--dataset", str(assets["dataset"]), "--splits", "test", "--output_dir", str(elsewhere),
                  "--check_against", str(output_dir / "eval_results.json")], cwd=elsewhere)  # fmt: skip
    assert "Every figure matches" in result.stdout
    return json.loads((elsewhere / "eval_results.json").read_text())["results"]["test"]


def test_yaml_values_are_overridden_by_command_line_flags(assets, tmp_path):
    model, data, training = parse_recipe_arguments(
        (ModelArguments, DataArguments, RetrievalTrainingArguments),
        recipe_args(assets, tmp_path, "--num_train_epochs", "5", "--model_config", '{"margin": 0.5}'),
    )
    assert training.num_train_epochs == 5 and training.learning_rate == 1e-3
    assert model.model_config == {"margin": 0.5} and model.lora_r == 4 and model.model_type == "cman"
    assert data.test_splits == ["test"]


def test_an_unknown_yaml_key_is_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("dataset_name: x\noutput_dir: y\nlearning_rte: 0.1\n")
    with pytest.raises(ValueError, match="learning_rte"):
        parse_recipe_arguments((ModelArguments, DataArguments, RetrievalTrainingArguments), [str(config)])


def test_a_two_epoch_run_under_accelerate_writes_a_loadable_folder_that_reproduces_its_metrics(
    assets, tmp_path
):
    output_dir = tmp_path / "run"
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    run([*accelerate, str(REPO / "recipes/accelerate_configs/single_process.yaml"), "recipes/train_retrieval.py",
         *recipe_args(assets, output_dir)])  # fmt: skip
    for name in ("config.json", "model.safetensors", "modeling_cman.py", "configuration_cman.py",
                 "processing_cman.py", "towers.py", "losses.py", "layers.py", "retrieval.py", "processing.py",
                 "processor_config.json", "eval_results.json", "trainer_state.json",
                 "train.log", "train_log.jsonl", "run_timings.json", "loss.png", "loss_diagnostics.png", "recall_at_k.png", "tsne.png", "fusion_attention.png"):  # fmt: skip
        assert (output_dir / name).exists(), name
    assert not list(output_dir.glob("*.bin")) and not list(output_dir.glob("*.pt"))
    phases = json.loads((output_dir / "run_timings.json").read_text())
    assert set(phases) == {"train", "test_evaluation", "plots", "total"}
    assert sum(v for k, v in phases.items() if k != "total") <= phases["total"]
    config = json.loads((output_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_cman.CmanModel"
    assert not any("lora" in key for key in load_file(output_dir / "model.safetensors"))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["epoch"] == 2.0
    assert any("eval_mean_recall" in record for record in state["log_history"])
    recorded = json.loads((output_dir / "eval_results.json").read_text())["results"]["test"]
    assert set(recorded["directions"]) == {f"{a}_to_{b}" for a in ("text", "audio", "image") for b in ("text", "audio", "image") if a != b}  # fmt: skip
    assert "text+audio_to_image" in recorded["composed"]

    again = evaluate_elsewhere(assets, output_dir, tmp_path)
    for group in ("directions", "composed"):
        for direction, metrics in recorded[group].items():
            for key in ("R@1", "R@5", "R@10", "median_rank", "mean_rank"):
                assert again[group][direction][key] == pytest.approx(metrics[key], abs=1e-4), (direction, key)


def test_a_cached_frozen_prefix_trains_exactly_like_the_whole_towers_and_serves_the_next_run(
    assets, tmp_path
):
    """LoRA on the last layer of each tower: the input stage and the first layer are the frozen prefix. Cached or
    not, the run logs the same losses and ends with the same weights; a second run reads every prefix state and
    every transcript from the cache folder."""
    extra = ("--num_train_epochs", "2", "--eval_strategy", "no", "--save_strategy", "no", "--make_plots", "false",
             "--lora_last_n", "2", "--cache_dir", str(tmp_path / "cache"))  # fmt: skip
    runs = {}
    for name, cached in (("uncached", "false"), ("cached", "true"), ("again", "true")):
        runs[name] = tmp_path / name
        run([sys.executable, "recipes/train_retrieval.py",
             *recipe_args(assets, runs[name], *extra, "--cache_frozen_prefix", cached)])  # fmt: skip
    expected = logged_losses(runs["uncached"])
    for name in ("cached", "again"):
        for step, loss in logged_losses(runs[name]).items():
            assert loss == pytest.approx(expected[step], rel=1e-5, abs=1e-6), (name, step)
        weights, reference = (
            load_file(runs[name] / "model.safetensors"),
            load_file(runs["uncached"] / "model.safetensors"),
        )
        for key, value in reference.items():
            torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6, msg=key)
    first = json.loads((runs["cached"] / "frozen_prefix_cache.json").read_text())
    second = json.loads((runs["again"] / "frozen_prefix_cache.json").read_text())
    assert len(first) == 3  # one namespace per tower
    for (
        stats
    ) in first.values():  # 2 epochs of 16 rows; each distinct input computed once (12 distinct images)
        assert (
            stats["hits"] + stats["misses"] == 32
            and stats["misses"] <= 16
            and stats["rows"] <= stats["misses"]
        )
    assert all(stats["misses"] == 0 and stats["hits"] > 0 for stats in second.values())
    log = (runs["cached"] / "train.log").read_text()
    assert "Frozen prefix cached for the text tower: input stage + layers 1-1 of 2" in log


def test_composed_queries_train_and_the_loss_logs_what_it_sees(assets, tmp_path):
    output_dir = tmp_path / "run"
    run([sys.executable, "recipes/train_retrieval.py", *recipe_args(assets, output_dir), "--num_train_epochs", "1",
         "--composed_loss_weight", "0.5", "--make_plots", "false"])  # fmt: skip
    diagnostics = [
        json.loads(line) for line in (output_dir / "loss_diagnostics.jsonl").read_text().splitlines()
    ]
    # 16 rows, 4 per step; evaluation does not log here; all negatives for the 2 warm-up steps, then hardest
    assert [d["step"] for d in diagnostics] == [0, 1, 2, 3]
    assert [d["loss"] for d in diagnostics] == ["MaxMarginLoss(all)"] * 2 + ["MaxMarginLoss(hardest)"] * 2
    for record in diagnostics:
        assert 0 <= record["active_hinges"] <= 1 and record["similarity_spread"] > 0
    logged = [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]
    assert all("hardest_negative_margin" in record for record in logged if "loss" in record)


def test_the_same_recipe_trains_the_late_fusion_family_chosen_in_the_yaml(assets, tmp_path):
    output_dir = tmp_path / "run"
    run([sys.executable, "recipes/train_retrieval.py", *recipe_args(assets, output_dir), "--model_type", "late_fusion",
         "--model_config", '{"projection_dim": 16, "loss_type": "sigmoid", "temperature": 0.1}',
         "--num_train_epochs", "1"])  # fmt: skip
    config = json.loads((output_dir / "config.json").read_text())
    assert (
        config["model_type"] == "late_fusion"
        and config["auto_map"]["AutoModel"] == "modeling_late_fusion.LateFusionModel"
    )
    assert (output_dir / "modeling_late_fusion.py").exists() and not (output_dir / "layers.py").exists()
    assert not (output_dir / "fusion_attention.png").exists()  # no fusion transformer to draw
    assert json.loads((output_dir / "train_results.json").read_text())["trainable_parameters"] > 0
    evaluate_elsewhere(assets, output_dir, tmp_path)


def test_a_run_whose_whisper_transcribes_saves_the_recognizer_and_reproduces_its_metrics(assets, tmp_path):
    import yaml

    model_config = yaml.safe_load(TINY_CONFIG.read_text())["model_config"]
    model_config.update(transcribe_audio=True, speech_recognizer_config={"max_new_tokens": 6})
    output_dir = tmp_path / "run"
    run([sys.executable, "recipes/train_retrieval.py", *recipe_args(assets, output_dir),
         "--audio_tower", str(assets["whisper"]), "--model_config", json.dumps(model_config),
         "--num_train_epochs", "1"])  # fmt: skip
    assert "Transcribed the training and validation audio" in (output_dir / "train.log").read_text()
    weights = load_file(output_dir / "model.safetensors")
    assert any(key.startswith("speech_recognizer.model.decoder.") for key in weights)
    assert (output_dir / "transcription" / "recognizer").is_dir() and (
        output_dir / "transcription" / "text"
    ).is_dir()
    evaluate_elsewhere(assets, output_dir, tmp_path)


def test_a_bad_row_stops_training_with_its_id_and_column(assets, tmp_path):
    import datasets

    dataset = datasets.load_from_disk(str(assets["dataset"]))
    train = dataset["train"].cast_column("image", datasets.Image(decode=False))
    rows = train.to_list()
    rows[3]["image"] = {"bytes": b"\x89PNG broken", "path": None}
    broken = datasets.DatasetDict(
        {**dataset, "train": datasets.Dataset.from_list(rows, features=train.features)}
    )
    broken.save_to_disk(str(tmp_path / "broken"))
    args = recipe_args({**assets, "dataset": tmp_path / "broken"}, tmp_path / "run", "--test_splits", "test")
    result = subprocess.run([sys.executable, "recipes/train_retrieval.py", *args], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode != 0
    assert "BadRowError" in result.stderr and rows[3]["id"] in result.stderr and "image" in result.stderr


def test_last_complete_checkpoint_skips_one_interrupted_while_saving(tmp_path):
    def checkpoint(step: int, files: dict[str, str]) -> Path:
        folder = tmp_path / f"checkpoint-{step}"
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        return folder

    complete = {
        "trainer_state.json": "{}",
        "optimizer.pt": "x",
        "scheduler.pt": "x",
        "adapter_model.safetensors": "x",
    }
    checkpoint(2, complete)
    checkpoint(4, {"adapter_model.safetensors": "x"})
    checkpoint(6, {**complete, "trainer_state.json": ""})  # killed while writing the trainer state (seen)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    # FSDP: complete once both torch.distributed.checkpoint folders have their .metadata
    sharded = {"trainer_state.json": "{}", "scheduler.pt": "x", "pytorch_model_fsdp_0/.metadata": "x"}
    checkpoint(8, sharded)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    checkpoint(8, {"optimizer_0/.metadata": "x"})
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    # DeepSpeed: complete once `latest` names an existing step folder
    checkpoint(10, {"trainer_state.json": "{}", "scheduler.pt": "x", "latest": "global_step10"})
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    checkpoint(10, {"global_step10/mp_rank_00_model_states.pt": "x"})
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")


def test_a_run_killed_after_a_checkpoint_resumes_exactly(assets, tmp_path):
    extra = ("--num_train_epochs", "3", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no",
             "--test_splits", "test", "--make_plots", "false")  # fmt: skip
    reference = tmp_path / "reference"
    run([sys.executable, "recipes/train_retrieval.py", *recipe_args(assets, reference, *extra)])

    resumed = tmp_path / "resumed"
    killed_at = kill_after_checkpoint(
        [sys.executable, "recipes/train_retrieval.py", *recipe_args(assets, resumed, *extra)], resumed
    )
    run([sys.executable, "recipes/train_retrieval.py", *recipe_args(assets, resumed, *extra)])

    reference_losses, resumed_losses = logged_losses(reference), logged_losses(resumed)
    assert reference_losses.keys() == resumed_losses.keys()
    for step, loss in reference_losses.items():
        assert resumed_losses[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), (step, killed_at)
    expected, actual = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_the_recipe_under_accelerate_ddp_trains_like_one_process_on_the_global_batch(assets, tmp_path):
    """The recipe itself, under `accelerate launch --config_file ddp.yaml` (2 CPU processes over gloo, batch 4 each,
    negatives gathered across ranks), logs the same losses and ends with the same weights as 1 process with
    batch 8."""
    extra = ("--num_train_epochs", "2", "--eval_strategy", "no", "--save_strategy", "no", "--test_splits", "test",
             "--make_plots", "false", "--lora_dropout", "0.0")  # fmt: skip
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    configs = REPO / "recipes" / "accelerate_configs"
    two = tmp_path / "ddp"
    run([*accelerate, str(configs / "ddp.yaml"), "--main_process_port", "29533", "recipes/train_retrieval.py",
         *recipe_args(assets, two, *extra, "--per_device_train_batch_size", "4")])  # fmt: skip
    one = tmp_path / "single"
    run([*accelerate, str(configs / "single_process.yaml"), "recipes/train_retrieval.py",
         *recipe_args(assets, one, *extra, "--per_device_train_batch_size", "8")])  # fmt: skip
    assert json.loads((two / "train_results.json").read_text())["train_samples_per_second"] > 0
    two_losses, one_losses = logged_losses(two), logged_losses(one)
    assert two_losses.keys() == one_losses.keys() and len(one_losses) == 4  # 16 rows / 8 per step x 2 epochs
    for step, loss in one_losses.items():
        assert two_losses[step] == pytest.approx(loss, rel=1e-4, abs=1e-5), step
    expected, actual = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.fixture(autouse=True)
def _no_stray_runs(tmp_path):
    yield
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_the_chosen_precision_reaches_the_training_loop(assets, tmp_path):
    """`precision: bf16` must put the Trainer's loop under bfloat16 autocast (it is the accelerator's
    `mixed_precision`, not `bf16`, that the loop reads), and `fp32` must not: the same run in the two precisions logs
    the same first loss to bfloat16's resolution, not bit for bit."""
    losses = {}
    for precision in ("bf16", "fp32"):
        output_dir = tmp_path / precision
        run([sys.executable, "recipes/train_retrieval.py", *recipe_args(assets, output_dir),
             "--precision", precision, "--num_train_epochs", "1", "--make_plots", "false",
             "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"])  # fmt: skip
        log = (output_dir / "train.log").read_text()
        expected = "bf16" if precision == "bf16" else "no"
        assert f"Mixed precision of the training loop: {expected}" in log
        records = [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]
        losses[precision] = next(record["loss"] for record in records if "loss" in record)
    assert losses["bf16"] != losses["fp32"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
