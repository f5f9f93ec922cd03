"""A tiny trained run shared by the publishing, export and Space tests: the tiny CMAN of
`recipes/configs/cman_tiny_test.yaml` with a tiny random Whisper that transcribes (so the audio path with transcripts
is exercised), trained for one epoch on the generated tri-modal dataset by the real recipe in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.tiny import save_tiny_pretrained_towers, save_tiny_retrieval_dataset, save_tiny_whisper

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "recipes" / "configs" / "cman_tiny_test.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def recipe_args(assets: dict, output_dir: Path, *extra: str) -> list[str]:
    """The tiny config's arguments for the towers, dataset and output folder in `assets`, then `extra` (a flag given
    twice takes its last value)."""
    return [
        str(TINY_CONFIG),
        "--text_tower", str(assets["text"]),
        "--audio_tower", str(assets["audio"]),
        "--image_tower", str(assets["image"]),
        "--dataset_name", str(assets["dataset"]),
        "--output_dir", str(output_dir),
        *extra,
    ]  # fmt: skip


def train_tiny_run(root: Path) -> dict[str, Path]:
    """`{"run": the output_dir, "dataset": its dataset, ...towers}` after one epoch of the recipe."""
    root = Path(root)
    towers = save_tiny_pretrained_towers(root / "towers")
    whisper = save_tiny_whisper(root / "towers" / "whisper")
    dataset = save_tiny_retrieval_dataset(root / "dataset")
    model_config = yaml.safe_load(TINY_CONFIG.read_text())["model_config"]
    model_config.update(transcribe_audio=True, speech_recognizer_config={"max_new_tokens": 6})
    run_dir = root / "run"
    assets = {**towers, "audio": whisper, "dataset": dataset}
    command = [sys.executable, "recipes/train_retrieval.py", *recipe_args(assets, run_dir, "--model_config",
               json.dumps(model_config), "--num_train_epochs", "1")]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"The tiny run failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return {**towers, "whisper": whisper, "dataset": dataset, "run": run_dir}


def logged_losses(output_dir: Path) -> dict[int, float]:
    """`{step: loss}` of a run's `train_log.jsonl` (a resumed run logs the replayed steps again: the last counts)."""
    records = (json.loads(line) for line in (Path(output_dir) / "train_log.jsonl").read_text().splitlines())
    return {record["step"]: record["loss"] for record in records if "loss" in record}


def run_ok(command: list[str], cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `command` (a recipe, usually) and assert it succeeded, showing the end of its output otherwise."""
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    return result


def kill_after_checkpoint(command: list[str], output_dir: Path, accept=lambda checkpoint: True) -> str:
    """Start `command` and SIGKILL it (no clean-up), with every process it started, as soon as `output_dir` holds a
    complete checkpoint that `accept(path)` takes; returns the last complete checkpoint after the kill. torch's
    elastic agent (`accelerate launch`) starts its workers in sessions of their own: killing the launcher's process
    group would leave them training."""
    import psutil

    from recipes.training.trainer import last_complete_checkpoint

    process = subprocess.Popen(
        command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    victims = []
    try:
        started = time.monotonic()
        while (checkpoint := last_complete_checkpoint(output_dir)) is None or not accept(checkpoint):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() - started < 300
            time.sleep(0.02)
        victims = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    psutil.wait_procs([victim for victim in victims if victim.is_running()], timeout=30)
    assert not (Path(output_dir) / "model.safetensors").exists(), "the run finished before it could be killed"
    return last_complete_checkpoint(output_dir)
