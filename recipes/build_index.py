"""Embed one split of a dataset with a retrieval model, in resumable shards, and build a FAISS index over it.

    python recipes/build_index.py --model outputs/demo --dataset outputs/data/stamps --split train \\
        --modality image --output_dir outputs/demo_index [--shard_size 10000] [--index_type auto]
    python recipes/build_index.py ... --query_text "a red circle" --k 5     # then print the top 5 rows

Rows ``[i S, (i + 1) S)`` of the split (``S = --shard_size``) become ``embeddings/shard-<i>.npy`` (float32, with the
rows' positions and group ids beside it), each written atomically; ``manifest.json`` records the model (and a
sha256 fingerprint of its files), the dataset (and its fingerprint), split, modality, columns, shard and batch size.
Rerunning on the same ``--output_dir`` skips the finished shards (a run killed at any point loses only the shard it
was embedding) and refuses a folder whose manifest disagrees (another model, dataset, shard size...) unless
``--overwrite`` is given. Keep ``--shard_size`` a multiple of ``--batch_size``: the batches (so the captions'
padding) are then those of one pass over the split, and the embeddings identical to it.

The index (inner product on L2-normalised embeddings) is then built from the memory-mapped shards, block by block:
``--index_type auto`` chooses an exact flat index up to ``--flat_max`` vectors (100k), HNSW up to ``--hnsw_max``
(2M; ``--hnsw_m``, ``--ef_search``) and IVF-PQ above (``--nlist``, default the power of two nearest 4 sqrt(N);
``--pq_m`` x ``--pq_bits`` codes; ``--nprobe``; trained on ``--train_size`` random rows, default min(256 nlist,
1M)). It writes ``index.faiss``, ``ids.npy`` (the split position of each vector) and ``index_config.json`` (type,
parameters, N, D, build seconds, memory bytes). An index already built from the same shards with the same build
parameters is kept (only its search parameters are updated); ``--rebuild_index`` forces a new one. Search it with
`recipes.evaluation.index.load_index(folder).search(query_embeddings, k)` (``rerank=R`` re-scores the top R
candidates exactly from the shards, as IVF-PQ's scores are approximations; ``--rerank`` with ``--query_text``).
Arguments may also come from a YAML file (first argument).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.data.retrieval import RetrievalColumns, load_retrieval_dataset  # noqa: E402
from recipes.evaluation.index import (  # noqa: E402
    INDEX_CONFIG_FILE,
    EmbeddingStore,
    IndexOptions,
    ManifestMismatchError,
    build_index,
    build_manifest,
    embed_shards,
    embed_texts,
    load_index,
    model_fingerprint,
    parse_modality,
    resolve_index_parameters,
    save_index,
    write_text_atomic,
)
from recipes.evaluation.retrieval import load_model_and_processor  # noqa: E402
from recipes.utils.arguments import parse_recipe_arguments  # noqa: E402
from recipes.utils.models import model_digest  # noqa: E402
from recipes.utils.run_lock import RunLock, RunLockedError  # noqa: E402

logger = logging.getLogger("build_index")


@dataclass
class BuildIndexArguments:
    model: str = field(metadata={"help": "saved folder or Hub id of a retrieval model (with its processor)"})
    dataset: str = field(metadata={"help": "folder written by save_to_disk, or a Hub dataset name"})
    output_dir: str = field(metadata={"help": "the index folder: manifest, embedding shards, index"})
    dataset_config_name: str | None = None
    split: str = "train"
    modality: str = field(
        default="image",
        metadata={"help": "what to embed: text, audio, image or a combination like text+audio"},
    )
    text_column: str = field(default="text", metadata={"help": "'' when the dataset has no text"})
    audio_column: str = field(default="audio", metadata={"help": "'' when the dataset has no audio"})
    image_column: str = field(default="image", metadata={"help": "'' when the dataset has no images"})
    id_column: str = "id"
    max_items: int | None = field(default=None, metadata={"help": "index only the first rows of the split"})
    shard_size: int = field(
        default=10_000, metadata={"help": "rows per shard file (a multiple of batch_size)"}
    )
    batch_size: int = 32
    num_workers: int = 0
    cache_dir: str | None = field(
        default=None, metadata={"help": "keep transcripts there (see add_transcripts)"}
    )
    device: str | None = field(default=None, metadata={"help": "default: cuda when available, else cpu"})
    threads: int | None = field(default=None, metadata={"help": "torch and FAISS threads (default: all)"})
    overwrite: bool = field(
        default=False, metadata={"help": "discard the shards and index of output_dir instead of resuming"}
    )
    rebuild_index: bool = field(
        default=False, metadata={"help": "rebuild the index even if it is up to date"}
    )
    index_type: str = field(default="auto", metadata={"help": "auto, flat (exact), hnsw or ivfpq"})
    flat_max: int = field(
        default=100_000, metadata={"help": "auto: exact flat index up to this many vectors"}
    )
    hnsw_max: int = field(
        default=2_000_000, metadata={"help": "auto: HNSW up to this many vectors, IVF-PQ above"}
    )
    hnsw_m: int = field(default=32, metadata={"help": "HNSW links per node"})
    ef_construction: int = field(default=40, metadata={"help": "HNSW candidates while building"})
    ef_search: int = field(default=64, metadata={"help": "HNSW candidates per search"})
    nlist: int | None = field(
        default=None, metadata={"help": "IVF lists (default: power of two nearest 4 sqrt(N))"}
    )
    pq_m: int = field(
        default=64, metadata={"help": "PQ sub-quantizers (bytes per code at 8 bits); divides D"}
    )
    pq_bits: int = 8
    nprobe: int = field(default=16, metadata={"help": "IVF lists searched per query"})
    train_size: int | None = field(
        default=None, metadata={"help": "IVF-PQ training rows (default: min(256 nlist, 1M))"}
    )
    kmeans_iterations: int = 20
    coarse_quantizer: str = field(
        default="auto", metadata={"help": "IVF coarse quantizer: auto, flat or hnsw"}
    )
    seed: int = 0
    query_text: list[str] | None = field(
        default=None, metadata={"help": "texts to search the built index with (printed with their top k)"}
    )
    k: int = 5
    rerank: int | None = field(
        default=None,
        metadata={
            "help": "re-score the index's top R candidates of each query exactly from the shards (IVF-PQ)"
        },
    )


def index_options(args: BuildIndexArguments) -> IndexOptions:
    return IndexOptions(
        index_type=args.index_type,
        flat_max=args.flat_max,
        hnsw_max=args.hnsw_max,
        hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
        nlist=args.nlist,
        pq_m=args.pq_m,
        pq_bits=args.pq_bits,
        nprobe=args.nprobe,
        train_size=args.train_size,
        kmeans_iterations=args.kmeans_iterations,
        coarse_quantizer=args.coarse_quantizer,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_recipe_arguments((BuildIndexArguments,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it tried, line by line
    modality = parse_modality(args.modality)
    if args.shard_size % args.batch_size:
        logger.warning(
            "--shard_size %d is not a multiple of --batch_size %d: batches differ from one pass over the split, "
            "so caption padding (and the last digits of text embeddings) may too.",
            args.shard_size,
            args.batch_size,
        )
    if args.threads:
        import faiss
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    command = ["recipes/build_index.py", *(sys.argv[1:] if argv is None else argv)]
    with RunLock(output_dir, command):
        return _build(args, modality, output_dir)


def _build(args: BuildIndexArguments, modality: tuple[str, ...], output_dir: Path) -> dict:
    started = time.perf_counter()
    columns = RetrievalColumns(
        text=args.text_column or None,
        audio=args.audio_column or None,
        image=args.image_column or None,
        id=args.id_column or None,
    )
    dataset = load_retrieval_dataset(args.dataset, split=args.split, config_name=args.dataset_config_name)
    split_fingerprint = getattr(dataset, "_fingerprint", None)
    if args.max_items is not None:
        dataset = dataset.select(range(min(args.max_items, len(dataset))))
    model = processor = None
    fingerprint = model_fingerprint(args.model)
    if fingerprint is None:  # a Hub id: the digest of the loaded weights
        model, processor = load_model_and_processor(args.model, args.device)
        fingerprint = "weights:" + model_digest(model)
    local_dataset = Path(args.dataset).exists()
    manifest = build_manifest(
        model=str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model,
        model_fingerprint=fingerprint,
        dataset=str(Path(args.dataset).resolve()) if local_dataset else args.dataset,
        dataset_config_name=args.dataset_config_name,
        dataset_fingerprint=split_fingerprint,
        split=args.split,
        max_items=args.max_items,
        modality=modality,
        columns=columns,
        num_rows=len(dataset),
        shard_size=args.shard_size,
        batch_size=args.batch_size,
    )
    store = EmbeddingStore(output_dir)
    store.prepare(manifest, overwrite=args.overwrite)
    missing = store.missing_shards()
    done = store.num_shards - len(missing)
    if done:
        logger.info(
            "Resuming %s: %d of %d shard(s) already embedded, skipped; embedding the other %d.",
            output_dir,
            done,
            store.num_shards,
            len(missing),
        )
    embedded: list[int] = []
    if missing:
        if model is None:
            model, processor = load_model_and_processor(args.model, args.device)
        embedded = embed_shards(
            model,
            processor,
            dataset,
            store,
            num_workers=args.num_workers,
            cache_dir=args.cache_dir,
            shards=missing,
        )
    logger.info(
        "Embedded %d shard(s) in this run, skipped %d; %d rows of %s in %d shard(s).",
        len(embedded),
        done,
        manifest["num_rows"],
        manifest["modality"],
        store.num_shards,
    )

    matrix = store.embeddings()
    options = index_options(args)
    parameters = resolve_index_parameters(options, matrix.num_rows, matrix.dim)
    config_path = output_dir / INDEX_CONFIG_FILE
    previous = json.loads(config_path.read_text()) if config_path.is_file() else None
    up_to_date = (
        previous is not None
        and not args.rebuild_index
        and not embedded
        and previous["index_type"] == parameters["index_type"]
        and previous["build"] == parameters["build"]
        and previous["num_vectors"] == matrix.num_rows
    )
    if up_to_date:
        config = {**previous, "search": parameters["search"]}
        if config != previous:
            write_text_atomic(config_path, json.dumps(config, indent=2) + "\n")
        logger.info("The %s index in %s is up to date: kept.", config["index_type"], output_dir)
    else:
        index, config = build_index(matrix, options)
        config["embeddings"] = {key: manifest[key] for key in ("model", "dataset", "split", "modality")}
        save_index(output_dir, index, store.row_ids(), config)
        del index
        logger.info(
            "Built the %s index of %d x %d in %.1f s (%.1f MiB): %s",
            config["index_type"],
            config["num_vectors"],
            config["dim"],
            config["build_seconds"],
            config["memory_bytes"] / 2**20,
            output_dir / "index.faiss",
        )
    result = {
        "output_dir": str(output_dir),
        "num_rows": manifest["num_rows"],
        "num_shards": store.num_shards,
        "shards_skipped": done,
        "shards_embedded": len(embedded),
        "index": config,
        "seconds": time.perf_counter() - started,
    }
    if args.query_text:
        if model is None:
            model, processor = load_model_and_processor(args.model, args.device)
        result["queries"] = query(
            output_dir, model, processor, dataset, columns, args.query_text, args.k, args.rerank
        )
    return result


def query(
    output_dir: Path,
    model,
    processor,
    dataset,
    columns: RetrievalColumns,
    texts: list[str],
    k: int,
    rerank: int | None = None,
) -> list[dict]:
    """Search the index of `output_dir` with each text and print its top `k` rows (position, score, id, caption);
    with `rerank`, the top `rerank` candidates are re-scored exactly first (see `BuiltIndex.search`)."""
    built = load_index(output_dir)
    k = min(k, built.index.ntotal)
    scores, ids = built.search(embed_texts(model, processor, texts), k, rerank=rerank)
    shown = [c for c in (columns.id, columns.text) if c is not None and c in dataset.column_names]
    table = dataset.select_columns(shown) if shown else None
    results = []
    for text, row_scores, row_ids in zip(texts, scores, ids, strict=True):
        how = f", top {rerank} re-ranked exactly" if rerank else ""
        print(f"\nTop {len(row_ids)} for {text!r} ({built.config['index_type']} index{how}):")
        hits = []
        for rank, (score, row) in enumerate(zip(row_scores, row_ids, strict=True), start=1):
            if row < 0:
                continue
            values = table[int(row)] if table is not None else {}
            hits.append({"rank": rank, "row": int(row), "score": float(score), **values})
            print(
                f"  {rank:>3}. row {int(row):>8}  score {score:.4f}  " + "  ".join(map(str, values.values()))
            )
        results.append({"query": text, "hits": hits})
    return results


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        summary = main()
    except (ManifestMismatchError, RunLockedError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(
        f"\n{summary['output_dir']}: {summary['num_rows']} rows in {summary['num_shards']} shards "
        f"({summary['shards_embedded']} embedded now, {summary['shards_skipped']} skipped), "
        f"{summary['index']['index_type']} index, {summary['seconds']:.0f} s."
    )
