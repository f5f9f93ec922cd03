"""Retrieval evaluation of any retrieval family: embed each split once (every combination of modalities in one pass
of the towers), rank all six directions and the composed queries, and report R@1/5/10, median and mean rank with
their chance levels. The script `recipes/evaluate_retrieval.py` and the training recipe both use it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from recipes.data.retrieval import (
    RetrievalCollator,
    RetrievalColumns,
    add_transcripts,
    prepare_for_lazy_decoding,
    resolve_columns,
)
from recipes.evaluation.ranking import (
    FaissIndexType,
    chance_median_rank,
    chance_recall,
    load_recall_metric,
    positives_from_ids,
    rank_of_positives,
)
from recipes.utils.models import MODALITIES, transcribes_audio

logger = logging.getLogger(__name__)

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
    faiss_index: FaissIndexType = "flat"
    nprobe: int = 32
    max_items: int | None = None
    skip_bad_rows: bool = False
    cache_dir: str | None = None  # where transcripts are kept (see `add_transcripts`)


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
    collator: RetrievalCollator,
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
        query,
        gallery,
        positives,
        chunk_size=config.chunk_size,
        faiss_above=config.faiss_above,
        faiss_index=config.faiss_index,
        nprobe=config.nprobe,
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
    """Evaluate `model` on each of `config.splits` of `dataset_dict` (a `DatasetDict` or a mapping of datasets).
    With `config.skip_bad_rows`, undecodable rows are left out and counted (`skipped_rows` of each split)."""
    results = {}
    for split in config.splits:
        if split not in dataset_dict:
            raise ValueError(f"Split {split!r} is not in the dataset; it has {sorted(dataset_dict)}.")
        dataset = dataset_dict[split]
        if config.max_items is not None:
            dataset = dataset.select(range(min(config.max_items, len(dataset))))
        dataset = prepare_for_lazy_decoding(dataset, config.columns)
        if transcribes_audio(model) and config.columns.audio in dataset.column_names:
            # The recogniser is frozen: transcribe each row once, not once per batch of every combination.
            dataset = add_transcripts(
                dataset,
                model,
                processor,
                config.columns,
                config.batch_size,
                skip_bad_rows=config.skip_bad_rows,
                description=f"transcribing {split}",
                cache_dir=config.cache_dir,
            )
        collator = RetrievalCollator(processor, columns=config.columns, skip_bad_rows=config.skip_bad_rows)
        results[split] = evaluate_split(model, collator, dataset, config, split)
        if config.skip_bad_rows:
            results[split]["skipped_rows"] = collator.num_skipped
            if collator.num_skipped:
                logger.warning(
                    "%s: skipped %d bad row(s) (see the warnings above).", split, collator.num_skipped
                )
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
