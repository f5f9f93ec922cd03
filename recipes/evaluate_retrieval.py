"""Evaluate a CMAN model on cross-modal retrieval: all six directions between text, audio and images, plus
composed queries (e.g. text + speech -> image), for one or more splits of any `datasets` dataset.

    python recipes/evaluate_retrieval.py --model outputs/demo --dataset outputs/data/stamps \\
        --splits test test_animals --composed text+audio:image

Writes `eval_results.json` (R@1/5/10, median and mean rank per direction, with the chance level of each) to
`--output_dir` (default: the model folder) and prints a table. Items whose captions normalise to the same string
are one item: any of them counts as a correct answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.data.retrieval import (  # noqa: E402
    CmanRetrievalCollator,
    RetrievalColumns,
    add_transcripts,
    load_retrieval_dataset,
    prepare_for_lazy_decoding,
    resolve_columns,
    transcribes_audio,
)
from recipes.retrieval import (  # noqa: E402
    chance_median_rank,
    chance_recall,
    load_recall_metric,
    positives_from_ids,
    rank_of_positives,
)

logger = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "image")
KS = (1, 5, 10)


@dataclass
class RetrievalEvalConfig:
    """What to evaluate and how: splits, columns, composed queries, batch size and search settings."""

    splits: list[str] = field(default_factory=lambda: ["test"])
    columns: RetrievalColumns = field(default_factory=RetrievalColumns)
    composed: list[str] = field(default_factory=lambda: ["text+audio:image"])
    batch_size: int = 32
    num_workers: int = 0
    chunk_size: int = 4096
    faiss_above: int | None = 200_000
    max_items: int | None = None


def parse_composed(spec: str) -> tuple[tuple[str, ...], str]:
    """`"text+audio:image"` -> `(("text", "audio"), "image")`."""
    try:
        query, gallery = spec.split(":")
    except ValueError as error:
        raise ValueError(f"Composed query {spec!r} must look like 'text+audio:image'.") from error
    parts = tuple(part.strip() for part in query.split("+"))
    for modality in (*parts, gallery):
        if modality not in MODALITIES:
            raise ValueError(f"Composed query {spec!r} names {modality!r}; modalities are {MODALITIES}.")
    if gallery in parts or len(parts) < 2:
        raise ValueError(
            f"Composed query {spec!r} needs two or more query modalities other than the gallery's."
        )
    return parts, gallery


@torch.no_grad()
def embed_dataset(
    model,
    collator: CmanRetrievalCollator,
    dataset,
    combinations: list[tuple[str, ...]],
    batch_size: int = 32,
    num_workers: int = 0,
    description: str = "embedding",
) -> tuple[dict[tuple[str, ...], torch.Tensor], torch.Tensor]:
    """Embeddings `(N, projection_dim)` of every combination for every row, and the rows' group ids `(N,)`."""
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)
    chunks: dict[tuple[str, ...], list[torch.Tensor]] = {c: [] for c in combinations}
    group_ids = []
    for batch in tqdm(loader, desc=description, unit="batch", leave=False):
        group_ids.append(batch.pop("group_ids"))
        batch = {k: v.to(device) for k, v in batch.items()}
        for combination, embeds in model.encode(combinations, **batch).items():
            chunks[combination].append(embeds.float().cpu())
    return {c: torch.cat(v) for c, v in chunks.items()}, torch.cat(group_ids)


def direction_metrics(
    query: torch.Tensor,
    gallery: torch.Tensor,
    query_ids: torch.Tensor,
    gallery_ids: torch.Tensor,
    config: RetrievalEvalConfig,
) -> dict:
    """R@K, median/mean rank of one direction, and the same figures for a random ranking (`chance`)."""
    positives = positives_from_ids(query_ids, gallery_ids)
    ranks = rank_of_positives(
        query, gallery, positives, chunk_size=config.chunk_size, faiss_above=config.faiss_above
    )
    metrics = load_recall_metric().compute(ranks=ranks.tolist(), ks=list(KS))
    counts = [len(p) for p in positives]
    metrics["chance"] = {f"R@{k}": chance_recall(len(gallery), counts, k) for k in KS}
    metrics["chance"]["median_rank"] = chance_median_rank(len(gallery), counts)
    metrics["num_queries"], metrics["num_gallery"] = len(query), len(gallery)
    return metrics


def evaluate_split(model, collator, dataset, config: RetrievalEvalConfig, split: str) -> dict:
    present = resolve_columns(dataset, collator.columns, collator.modalities)
    composed = [parse_composed(spec) for spec in config.composed]
    composed = [(q, g) for q, g in composed if all(m in present for m in (*q, g))]
    combinations = [(m,) for m in present] + [q for q, _ in composed]
    embeds, group_ids = embed_dataset(
        model, collator, dataset, combinations, config.batch_size, config.num_workers, f"embedding {split}"
    )
    results: dict = {"num_items": len(dataset), "directions": {}, "composed": {}}
    for query in present:
        for gallery in present:
            if query != gallery:
                results["directions"][f"{query}_to_{gallery}"] = direction_metrics(
                    embeds[(query,)], embeds[(gallery,)], group_ids, group_ids, config
                )
    for query, gallery in composed:
        results["composed"][f"{'+'.join(query)}_to_{gallery}"] = direction_metrics(
            embeds[query], embeds[(gallery,)], group_ids, group_ids, config
        )
    return results


def evaluate_model(model, processor, dataset_dict, config: RetrievalEvalConfig) -> dict:
    """Evaluate `model` on each of `config.splits` of `dataset_dict` (a `DatasetDict` or a mapping of datasets)."""
    results = {}
    for split in config.splits:
        if split not in dataset_dict:
            raise ValueError(f"Split {split!r} is not in the dataset; it has {sorted(dataset_dict)}.")
        dataset = dataset_dict[split]
        if config.max_items is not None:
            dataset = dataset.select(range(min(config.max_items, len(dataset))))
        dataset = prepare_for_lazy_decoding(dataset, config.columns)
        if transcribes_audio(model) and config.columns.audio in dataset.column_names:
            dataset = add_transcripts(
                dataset,
                model,
                processor,
                config.columns,
                config.batch_size,
                description=f"transcribing {split}",
            )
        collator = CmanRetrievalCollator(processor, columns=config.columns)
        results[split] = evaluate_split(model, collator, dataset, config, split)
    return results


def format_results(results: dict) -> str:
    """A Markdown table: one row per split and direction, chance in brackets."""
    lines = [
        "| split | direction | R@1 | R@5 | R@10 | median rank | mean rank | queries |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for split, split_results in results.items():
        rows = {**split_results["directions"], **split_results["composed"]}
        for direction, m in rows.items():
            c = m["chance"]
            lines.append(
                f"| {split} | {direction.replace('_to_', ' → ')} | {m['R@1']:.3f} ({c['R@1']:.3f}) | "
                f"{m['R@5']:.3f} ({c['R@5']:.3f}) | {m['R@10']:.3f} ({c['R@10']:.3f}) | "
                f"{m['median_rank']:g} ({c['median_rank']:g}) | {m['mean_rank']:.1f} | {m['num_queries']} |"
            )
    return "\n".join(lines) + "\n\nIn brackets: the same figure for a random ranking."


def load_model_and_processor(model_name_or_path: str, device: str | None = None):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_name_or_path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(model_name_or_path, trust_remote_code=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), processor


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help="saved folder or Hub id of a CMAN model (with its processor)"
    )
    parser.add_argument(
        "--dataset", required=True, help="folder written by save_to_disk, or a Hub dataset name"
    )
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--splits", nargs="+", default=["test"])
    parser.add_argument("--composed", nargs="*", default=["text+audio:image"], help="e.g. text+audio:image")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--audio_column", default="audio")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--id_column", default="id")
    parser.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="default: the batch size recorded in --check_against, else 32 (captions are padded per batch, so "
        "reproducing figures exactly needs the same batch size)",
    )
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--chunk_size", type=int, default=4096)
    parser.add_argument("--faiss_above", type=int, default=200_000)
    parser.add_argument("--max_items", type=int, default=None)
    parser.add_argument(
        "--output_dir", default=None, help="where eval_results.json goes (default: the model folder)"
    )
    parser.add_argument(
        "--check_against",
        default=None,
        help="an eval_results.json to reproduce: exit with an error if any figure differs by more than 1e-4",
    )
    args = parser.parse_args(argv)
    expected = json.loads(Path(args.check_against).read_text()) if args.check_against else {}
    if args.batch_size is None:
        args.batch_size = expected.get("batch_size", 32)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def none_if_empty(value: str) -> str | None:
        return value or None

    config = RetrievalEvalConfig(
        splits=args.splits,
        columns=RetrievalColumns(
            text=none_if_empty(args.text_column),
            audio=none_if_empty(args.audio_column),
            image=none_if_empty(args.image_column),
            id=none_if_empty(args.id_column),
        ),
        composed=args.composed,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        chunk_size=args.chunk_size,
        faiss_above=args.faiss_above,
        max_items=args.max_items,
    )
    started = time.perf_counter()
    model, processor = load_model_and_processor(args.model)
    dataset = load_retrieval_dataset(args.dataset, config_name=args.dataset_config_name)
    results = evaluate_model(model, processor, dataset, config)
    output_dir = Path(args.output_dir or args.model)
    if args.output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
    elif not output_dir.is_dir():
        raise ValueError(f"{output_dir} is not a local folder: pass --output_dir for a Hub model.")
    payload = {
        "model": args.model,
        "dataset": args.dataset,
        "batch_size": args.batch_size,
        "results": results,
    }
    (output_dir / "eval_results.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(format_results(results))
    print(f"\nWrote {output_dir / 'eval_results.json'} in {time.perf_counter() - started:.0f} s.")
    if args.check_against:
        differences = compare_results(expected["results"], results)
        if differences:
            raise SystemExit(f"Results differ from {args.check_against}: " + "; ".join(differences[:10]))
        print(f"Every figure matches {args.check_against} to 1e-4.")
    return payload


def compare_results(expected: dict, actual: dict, tolerance: float = 1e-4) -> list[str]:
    """Figures of `expected` (for the splits `actual` has) that `actual` does not reproduce within `tolerance`."""
    differences = []
    for split, split_results in actual.items():
        for group in ("directions", "composed"):
            for direction, metrics in split_results[group].items():
                reference = expected[split][group][direction]
                for key in ("R@1", "R@5", "R@10", "median_rank", "mean_rank"):
                    if abs(metrics[key] - reference[key]) > tolerance:
                        differences.append(f"{split} {direction} {key}: {metrics[key]} vs {reference[key]}")
    return differences


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
