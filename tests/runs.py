"""A tiny trained run shared by the publishing, export and Space tests: the tiny CMAN of
`recipes/configs/cman_tiny_test.yaml` with a tiny random Whisper that transcribes (so the audio path with transcripts
is exercised), trained for one epoch on the generated tri-modal dataset by the real recipe in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
