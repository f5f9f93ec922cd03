"""Training from a stream: Parquet shards in the Hub's layout, read by `datasets` as a streaming `IterableDataset`
with a shuffle buffer and one part of the stream per process.

Big image-text and audio-text sets on the Hub ship as many Parquet files, `data/<split>-00000-of-00042.parquet`, each
row holding the caption and the encoded image or audio bytes (`datasets.Image` / `datasets.Audio` columns).
[`write_parquet_shards`] writes any retrieval dataset (e.g. the stamps) in that layout, so the streaming path is
exercised offline exactly as it runs on such a set:

    python -m recipes.data.streaming --dataset outputs/data/stamps --output_dir outputs/data/stamps_parquet

and `recipes/train_retrieval.py ... --dataset_name outputs/data/stamps_parquet --streaming true` trains from it (a
Hub name works the same way). The training split is never loaded whole: each process reads its own shards (or every
n-th row when the shards do not divide among the processes), through a shuffle buffer re-seeded every epoch, so a
resumed run replays the same order and skips what it had trained on.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import datasets
from datasets.distributed import split_dataset_by_node

logger = logging.getLogger(__name__)

SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.parquet"


def write_parquet_shards(
    dataset: datasets.DatasetDict,
    output_dir: str | Path,
    rows_per_shard: int = 256,
    splits: list[str] | None = None,
) -> dict[str, list[Path]]:
    """Write each split of `dataset` as Parquet shards of at most `rows_per_shard` rows in `output_dir/data/`, in the
    Hub's file naming (`train-00000-of-00004.parquet`). Images and audio are stored as bytes inside the files, with
    the `datasets` features in the Parquet schema, so `datasets.load_dataset(output_dir, streaming=True)` gives the
    same columns back. Returns the files of each split."""
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}.")
    folder = Path(output_dir) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split in splits or list(dataset):
        if split not in dataset:
            raise ValueError(f"The dataset has no split {split!r}; it has {sorted(dataset)}.")
        rows = dataset[split]
        count = max(1, math.ceil(len(rows) / rows_per_shard))
        files = []
        for index in range(count):
            path = folder / SHARD_PATTERN.format(split=split, index=index, count=count)
            part = rows.select(range(index * rows_per_shard, min(len(rows), (index + 1) * rows_per_shard)))
            temporary = path.with_suffix(".parquet.tmp")
            part.to_parquet(str(temporary))
            temporary.replace(path)  # a crash never leaves a truncated shard under a shard's name
            files.append(path)
        written[split] = files
        logger.info("Wrote %s: %d rows in %d shards.", split, len(rows), count)
    return written


def open_stream(name_or_path: str, split: str, config_name: str | None = None) -> datasets.IterableDataset:
    """The `split` of a Hub dataset or a local folder of shards as a streaming `IterableDataset`."""
    try:
        return datasets.load_dataset(name_or_path, config_name, split=split, streaming=True)
    except ValueError as error:
        if "split" in str(error).lower() or "Unknown split" in str(error):
            raise ValueError(f"{name_or_path} has no split {split!r} to stream ({error}).") from error
        raise


def training_stream(
    name_or_path: str,
    split: str,
    *,
    config_name: str | None = None,
    shuffle_buffer_size: int = 1000,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    max_rows: int | None = None,
) -> datasets.IterableDataset:
    """The training stream of one process: shuffled through a buffer of `shuffle_buffer_size` rows (0: the shards'
    own order) with `seed` (the Trainer re-seeds it each epoch with `set_epoch`), then split among `world_size`
    processes: whole shards per process when their number divides evenly, else every `world_size`-th row."""
    stream = open_stream(name_or_path, split, config_name)
    if max_rows:
        stream = stream.take(max_rows)
    if shuffle_buffer_size:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    if world_size > 1:
        if stream.num_shards % world_size:
            logger.warning(
                "%d shards do not divide among %d processes: each process reads every shard and keeps every %d-th "
                "row.",
                stream.num_shards,
                world_size,
                world_size,
            )
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    return stream


def stream_num_rows(name_or_path: str, split: str, config_name: str | None = None) -> int:
    """Rows of a split without reading it: the Parquet footers of a local folder, else the dataset's metadata."""
    files = sorted((Path(name_or_path) / "data").glob(f"{split}-*.parquet"))
    if files:
        import pyarrow.parquet as pq

        return sum(pq.read_metadata(path).num_rows for path in files)
    builder = datasets.load_dataset_builder(name_or_path, config_name)
    splits = builder.info.splits or {}
    if split in splits and splits[split].num_examples:
        return splits[split].num_examples
    raise ValueError(
        f"The number of rows of {name_or_path}[{split}] is unknown without reading it: set --max_steps."
    )


def streaming_splits(
    data_args, seed: int = 0, rank: int = 0, world_size: int = 1
) -> tuple[datasets.DatasetDict, datasets.IterableDataset, int]:
    """For a recipe's `DataArguments` with `streaming`: the evaluation and test splits in memory (a `DatasetDict`),
    the training stream of this process ([`training_stream`]) and the number of training rows in all."""
    name, config = data_args.dataset_name, data_args.dataset_config_name
    others = {}
    for split in dict.fromkeys(s for s in [data_args.eval_split, *data_args.test_splits] if s):
        stream = open_stream(name, split, config)
        if split == data_args.eval_split and data_args.max_eval_samples:
            stream = stream.take(data_args.max_eval_samples)
        others[split] = materialize(stream)
    train = training_stream(
        name,
        data_args.train_split,
        config_name=config,
        shuffle_buffer_size=data_args.shuffle_buffer_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        max_rows=data_args.max_train_samples,
    )
    rows = stream_num_rows(name, data_args.train_split, config)
    if data_args.max_train_samples:
        rows = min(rows, data_args.max_train_samples)
    return datasets.DatasetDict(others), train, rows


def materialize(stream: datasets.IterableDataset) -> datasets.Dataset:
    """A (small) streamed split in memory, e.g. a validation or test split, with its features."""
    return datasets.Dataset.from_list(list(stream), features=stream.features)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a retrieval dataset as Parquet shards in the Hub's layout."
    )
    parser.add_argument(
        "--dataset", required=True, help="a save_to_disk folder or anything load_dataset reads"
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--rows_per_shard", type=int, default=256)
    parser.add_argument("--splits", nargs="*", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from recipes.data.retrieval import load_retrieval_dataset

    written = write_parquet_shards(
        load_retrieval_dataset(args.dataset), args.output_dir, args.rows_per_shard, args.splits
    )
    for split, files in written.items():
        print(f"{split}: {len(files)} shards in {Path(args.output_dir) / 'data'}")


if __name__ == "__main__":
    main()
