"""Training the retrieval recipe from a stream of Parquet shards (the Hub's layout, written from a generated dataset):
the shards hold the same rows, each process reads its own part, the streamed run equals the in-memory run on the same
order of samples, and a streamed run killed after a checkpoint resumes to the unbroken run's losses and weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipes.data.retrieval import load_retrieval_dataset
from recipes.data.streaming import open_stream, stream_num_rows, training_stream, write_parquet_shards
from tests.runs import kill_after_checkpoint, logged_losses, recipe_args, run_ok
from tests.tiny import save_tiny_pretrained_towers, save_tiny_retrieval_dataset


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("assets")
    dataset = save_tiny_retrieval_dataset(root / "dataset")
    write_parquet_shards(load_retrieval_dataset(str(dataset)), root / "shards", rows_per_shard=4)
    return {**save_tiny_pretrained_towers(root / "towers"), "dataset": dataset, "shards": root / "shards"}


def run(command: list[str]) -> str:
    result = run_ok(command)
    return result.stdout + result.stderr


def test_the_shards_hold_every_row_with_its_bytes_in_the_hubs_layout(assets):
    source = load_retrieval_dataset(str(assets["dataset"]))
    files = sorted(p.name for p in (assets["shards"] / "data").iterdir())
    assert files[:4] == [f"test-0000{i}-of-00002.parquet" for i in range(2)] + [
        "train-00000-of-00004.parquet",
        "train-00001-of-00004.parquet",
    ]
    for split in source:
        streamed = list(open_stream(str(assets["shards"]), split).decode(False))
        assert stream_num_rows(str(assets["shards"]), split) == len(source[split]) == len(streamed)
        expected = source[split].cast_column("image", source[split].features["image"].__class__(decode=False))
        for row, original in zip(streamed, expected):
            assert row["id"] == original["id"] and row["text"] == original["text"]
            assert row["image"]["bytes"] == original["image"]["bytes"]


@pytest.mark.parametrize("shuffle_buffer_size", [0, 8])
def test_each_process_streams_its_own_rows_and_together_they_stream_all(assets, shuffle_buffer_size):
    streams = [
        [row["id"] for row in training_stream(str(assets["shards"]), "train", shuffle_buffer_size=shuffle_buffer_size,
                                              seed=3, rank=rank, world_size=2).decode(False)]
        for rank in range(2)
    ]  # fmt: skip
    assert not set(streams[0]) & set(streams[1])
    assert sorted(streams[0] + streams[1]) == sorted(
        load_retrieval_dataset(str(assets["dataset"]), split="train")["id"]
    )
    assert len(streams[0]) == len(streams[1]) == 8  # 4 shards: two whole shards each


def test_the_shuffle_buffer_gives_one_order_per_seed_and_epoch(assets):
    def order(seed, epoch=0):
        stream = training_stream(str(assets["shards"]), "train", shuffle_buffer_size=8, seed=seed).decode(
            False
        )
        stream.set_epoch(epoch)  # what the Trainer calls at each epoch
        return [row["id"] for row in stream]

    assert order(0) == order(0)
    assert order(0) != order(1) and order(0, epoch=1) != order(0)
    assert sorted(order(0)) == sorted(order(0, epoch=1))


def test_a_streamed_run_equals_the_in_memory_run_on_the_same_order_of_samples(assets, tmp_path):
    """The shards in their own order (no shuffle buffer) against the saved dataset read sequentially: same batches,
    so the same losses and final weights, bit for bit."""
    extra = (
        "--num_train_epochs",
        "2",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--make_plots",
        "false",
    )
    run([sys.executable, "recipes/train_retrieval.py", *recipe_args(assets, tmp_path / "memory", *extra,
         "--train_sampling_strategy", "sequential")])  # fmt: skip
    streamed_assets = {**assets, "dataset": assets["shards"]}
    output = run([sys.executable, "recipes/train_retrieval.py", *recipe_args(streamed_assets, tmp_path / "stream",
                  *extra, "--streaming", "true", "--shuffle_buffer_size", "0")])  # fmt: skip
    assert "Streaming 16 training rows: 4 steps per epoch, max_steps=8." in output
    assert (
        logged_losses(tmp_path / "stream") == logged_losses(tmp_path / "memory")
        and len(logged_losses(tmp_path / "memory")) == 8
    )
    expected, actual = (
        load_file(tmp_path / "memory" / "model.safetensors"),
        load_file(tmp_path / "stream" / "model.safetensors"),
    )
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key
    test_results = [
        json.loads((tmp_path / d / "eval_results.json").read_text())["results"] for d in ("memory", "stream")
    ]
    assert test_results[0] == test_results[1]


def test_a_streamed_run_killed_after_a_checkpoint_resumes_exactly(assets, tmp_path):
    """With a shuffle buffer: the resumed run replays the epoch's order and skips the batches it had trained on."""
    streamed_assets = {**assets, "dataset": assets["shards"]}
    extra = ("--num_train_epochs", "3", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no",
             "--test_splits", "test", "--make_plots", "false", "--streaming", "true", "--shuffle_buffer_size", "8")  # fmt: skip
    run(
        [
            sys.executable,
            "recipes/train_retrieval.py",
            *recipe_args(streamed_assets, tmp_path / "unbroken", *extra),
        ]
    )
    resumed = tmp_path / "resumed"
    command = [sys.executable, "recipes/train_retrieval.py", *recipe_args(streamed_assets, resumed, *extra)]
    # A checkpoint inside an epoch after the first (4 steps an epoch: step 6 or 10): the resumed run must replay that
    # epoch's shuffled order and skip the batches it had trained on.
    killed_at = kill_after_checkpoint(
        command, resumed, accept=lambda path: int(path.rsplit("-", 1)[1]) % 4 != 0
    )
    output = run(command)
    assert f"Resuming from the last complete checkpoint in output_dir: {killed_at}" in output
    assert logged_losses(resumed) == pytest.approx(logged_losses(tmp_path / "unbroken"), rel=1e-6, abs=1e-7)
    expected, actual = (
        load_file(tmp_path / "unbroken" / "model.safetensors"),
        load_file(resumed / "model.safetensors"),
    )
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=1e-6, atol=1e-7, msg=key)


def test_a_split_that_is_not_there_is_named(assets):
    with pytest.raises(ValueError, match="validaton"):
        list(training_stream(str(assets["shards"]), "validaton"))
