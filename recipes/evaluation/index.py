"""Retrieval at scale: embed one split into resumable shards on disk, build a FAISS index over them, search it.

`recipes/build_index.py` drives it; an index folder holds::

    manifest.json                     what is embedded: model (and its fingerprint), dataset (and its fingerprint),
                                      split, modality, columns, number of rows, shard size, batch size, dimension
    embeddings/shard-00000.npy        (n, D) float32 embeddings of rows [0, S) of the split (S = shard size)
    embeddings/shard-00000.rows.npy   (n,) int64 positions of those rows in the split
    embeddings/shard-00000.groups.npy (n,) int64 group ids (rows with the same normalised caption share one)
    index.faiss, ids.npy              the FAISS index and the split position of each of its vectors
    index_config.json                 index type, build and search parameters, N, D, build seconds, memory bytes

Every file is written under a temporary name and renamed into place (`os.replace`), the embeddings of a shard last:
a shard whose embeddings file exists is complete, so a run killed at any moment (SIGKILL included) loses only the
shard it was embedding, and the next run on the folder embeds only the shards that are missing.

The index scores by inner product on L2-normalised embeddings (cosine similarity). Vectors are added block by block
from memory-mapped shards, so the embeddings are never held twice in memory. `choose_index_type` picks by size:

* ``flat`` (exact ``IndexFlatIP``) up to ``flat_max`` vectors (100k): N x D x 4 bytes, search linear in N;
* ``hnsw`` (``IndexHNSWFlat``, ``hnsw_m`` links per node, ``ef_search`` candidates per search) up to ``hnsw_max``
  (2M): the vectors plus about ``2 x hnsw_m x 4`` bytes of links each; fast to search, slow to build, its recall
  set by ``ef_search`` and by the graph's quality (``ef_construction``);
* ``ivfpq`` (``IndexIVFPQ``) above: ``nlist`` k-means lists (default: the power of two nearest ``4 sqrt(N)``),
  residuals coded by a product quantizer of ``pq_m`` sub-quantizers of ``pq_bits`` bits (64 x 8 bits: 64 bytes a
  vector, plus 8 bytes of id), ``nprobe`` lists searched per query. Trained on a random sample of at most
  ``train_size`` rows (default ``min(256 nlist, 1M)``). Its scores are approximations and it loses recall against
  exact search (PQ codes are lossy): `BuiltIndex.search(..., rerank=R)` re-scores the top ``R`` candidates
  exactly from the shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from recipes.data.retrieval import (
    RetrievalCollator,
    RetrievalColumns,
    add_transcripts,
    prepare_for_lazy_decoding,
    resolve_columns,
)
from recipes.evaluation.retrieval import embed_dataset
from recipes.utils.models import MODALITIES, transcribes_audio

if TYPE_CHECKING:
    import datasets
    import faiss

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
EMBEDDINGS_DIR = "embeddings"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
INDEX_CONFIG_FILE = "index_config.json"
INDEX_TYPES = ("flat", "hnsw", "ivfpq")
COARSE_QUANTIZERS = ("flat", "hnsw")

#: Manifest fields two runs on one folder must agree on (the model and dataset paths may differ if their
#: fingerprints agree: a moved folder is the same model).
MANIFEST_IDENTITY = (
    "format_version",
    "model_fingerprint",
    "dataset_fingerprint",
    "dataset_config_name",
    "split",
    "max_items",
    "modality",
    "columns",
    "num_rows",
    "shard_size",
    "batch_size",
)
#: Files of a model folder that decide its embeddings (weights, code, configs, tokenizers): what the fingerprint
#: hashes. Run artefacts (eval_results.json, logs, checkpoints) are left out, so re-evaluating a model keeps it.
MODEL_FILE_PATTERNS = (
    "*.safetensors",
    "*.py",
    "config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "vocab*",
    "merges.txt",
    "*.model",
    "transcription/**/*",
)
#: Coarse quantizers above this many lists are HNSW graphs with ``coarse_quantizer="auto"``. Assigning N vectors to
#: nlist exact centroids costs N x nlist x D multiply-adds, but as one matrix product: measured on 2 CPU cores at
#: D=512, 100k vectors took 2.5 s against 4096 flat centroids and 9.5 s against an HNSW graph (M 32, efSearch 32)
#: of 8192, so the graph only pays off from about 16k lists (the default nlist above ~25M vectors).
HNSW_QUANTIZER_ABOVE = 16_384
QUANTIZER_HNSW_M = 32
_HASH_BLOCK = 1 << 20


class ManifestMismatchError(ValueError):
    """An output folder holds shards of another build (another model, dataset, split, shard size...)."""


# ------------------------------------------------------------------------------------------------ atomic files
def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """`np.save` under a temporary name in the same folder, flushed to disk, then renamed to `path`."""
    path = Path(path)
    temporary = _temporary(path)
    with open(temporary, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` under a temporary name, then rename it to `path` (readers see the old or the new file)."""
    path = Path(path)
    temporary = _temporary(path)
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# ------------------------------------------------------------------------------------------------- fingerprints
def model_fingerprint(model_name_or_path: str | os.PathLike) -> str | None:
    """sha256 of the files of a local model folder that decide its embeddings (`MODEL_FILE_PATTERNS`: weights,
    code, configs, tokenizers), names and contents; `None` for a name that is not a local folder (a Hub id: use
    `recipes.utils.models.model_digest` of the loaded model)."""
    folder = Path(model_name_or_path)
    if not folder.is_dir():
        return None
    files = sorted(
        {path for pattern in MODEL_FILE_PATTERNS for path in folder.glob(pattern) if path.is_file()}
    )
    if not any(path.suffix == ".safetensors" for path in files):
        raise FileNotFoundError(
            f"{folder} holds no *.safetensors weights: pass the folder of a saved model (a run's output_dir)."
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def parse_modality(spec: str) -> tuple[str, ...]:
    """`"image"` -> `("image",)`, `"audio+text"` -> `("text", "audio")` (the zoo's modality order)."""
    parts = [part.strip() for part in spec.split("+")]
    unknown = [part for part in parts if part not in MODALITIES]
    if unknown or not parts or len(set(parts)) != len(parts):
        raise ValueError(
            f"--modality {spec!r} must be one of {MODALITIES} or a '+'-joined combination of distinct ones "
            "(e.g. text+audio)."
        )
    return tuple(m for m in MODALITIES if m in parts)


# --------------------------------------------------------------------------------------------------- the store
class EmbeddingStore:
    """The manifest and the embedding shards of one index folder (see the module's docstring for the layout)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.shard_dir = self.folder / EMBEDDINGS_DIR
        self.manifest_path = self.folder / MANIFEST_FILE
        self._manifest: dict | None = None

    # ---------------------------------------------------------------------------------------- manifest
    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = self.read_manifest()
            if self._manifest is None:
                raise FileNotFoundError(
                    f"{self.manifest_path} does not exist: {self.folder} is not an index folder written by "
                    "recipes/build_index.py."
                )
        return self._manifest

    def read_manifest(self) -> dict | None:
        if not self.manifest_path.is_file():
            return None
        return json.loads(self.manifest_path.read_text())

    def prepare(self, manifest: dict, overwrite: bool = False) -> None:
        """Make the folder hold shards of `manifest`'s build: start it, or check that its manifest agrees.

        With `overwrite`, existing shards, manifest and index are deleted first. Otherwise a manifest that
        disagrees on any of `MANIFEST_IDENTITY` raises `ManifestMismatchError` naming the fields.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = self.read_manifest()
        if overwrite and (existing is not None or self.shard_dir.exists()):
            logger.info("--overwrite: deleting the shards, manifest and index in %s.", self.folder)
            shutil.rmtree(self.shard_dir, ignore_errors=True)
            for name in (MANIFEST_FILE, INDEX_FILE, IDS_FILE, INDEX_CONFIG_FILE):
                (self.folder / name).unlink(missing_ok=True)
            existing = None
        if existing is None and self.shard_dir.is_dir() and any(self.shard_dir.glob("shard-*.npy")):
            raise ManifestMismatchError(
                f"{self.shard_dir} holds shards but {self.manifest_path} is missing, so nothing says what they "
                "embed. Pass --overwrite to discard them, or choose another --output_dir."
            )
        if existing is not None:
            check_manifest(existing, manifest, self.manifest_path)
            if existing.get("model") != manifest.get("model"):
                logger.info(
                    "The model is now at %s (was %s), with the same fingerprint.",
                    manifest["model"],
                    existing.get("model"),
                )
            manifest = {**manifest, "dim": existing.get("dim") or manifest.get("dim")}
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.shard_dir.glob(".*.tmp-*"):  # left by a killed run; this run holds the folder
            stale.unlink()
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=2) + "\n")
        self._manifest = manifest

    def _set_dim(self, dim: int) -> None:
        if self.manifest.get("dim") == dim:
            return
        if self.manifest.get("dim") is not None:
            raise ValueError(
                f"Shards of {self.folder} have dimension {self.manifest['dim']} but the model now embeds {dim}-d "
                "vectors: pass --overwrite to re-embed everything."
            )
        self._manifest = {**self.manifest, "dim": dim}
        write_text_atomic(self.manifest_path, json.dumps(self._manifest, indent=2) + "\n")

    # ------------------------------------------------------------------------------------------ shards
    @property
    def num_shards(self) -> int:
        return math.ceil(self.manifest["num_rows"] / self.manifest["shard_size"])

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Rows ``[start, end)`` of the split that `shard` holds."""
        size = self.manifest["shard_size"]
        return shard * size, min((shard + 1) * size, self.manifest["num_rows"])

    def shard_path(self, shard: int, kind: str = "embeddings") -> Path:
        """``kind``: ``"embeddings"`` (``shard-00000.npy``), ``"rows"`` or ``"groups"`` (``shard-00000.rows.npy``)."""
        suffix = "" if kind == "embeddings" else f".{kind}"
        return self.shard_dir / f"shard-{shard:05d}{suffix}.npy"

    def is_complete(self, shard: int) -> bool:
        """Whether all three files of `shard` exist with the expected number of rows."""
        paths = [self.shard_path(shard, kind) for kind in ("embeddings", "rows", "groups")]
        if not all(path.is_file() for path in paths):
            return False
        start, end = self.shard_range(shard)
        try:
            shapes = [np.load(path, mmap_mode="r").shape for path in paths]
        except (ValueError, OSError):
            return False
        return shapes[0][0] == shapes[1][0] == shapes[2][0] == end - start

    def missing_shards(self) -> list[int]:
        return [shard for shard in range(self.num_shards) if not self.is_complete(shard)]

    def write_shard(self, shard: int, embeds: np.ndarray, rows: np.ndarray, groups: np.ndarray) -> None:
        """Write the three files of `shard` atomically, the embeddings (the mark of a complete shard) last."""
        start, end = self.shard_range(shard)
        if not embeds.ndim == 2 or not len(embeds) == len(rows) == len(groups) == end - start:
            raise ValueError(
                f"Shard {shard} covers rows [{start}, {end}) but got {len(embeds)} embeddings, {len(rows)} row ids "
                f"and {len(groups)} group ids."
            )
        self._set_dim(int(embeds.shape[1]))
        save_npy_atomic(self.shard_path(shard, "rows"), np.asarray(rows, dtype=np.int64))
        save_npy_atomic(self.shard_path(shard, "groups"), np.asarray(groups, dtype=np.int64))
        save_npy_atomic(self.shard_path(shard), np.ascontiguousarray(embeds, dtype=np.float32))

    def _load_all(self, kind: str, mmap: bool) -> list[np.ndarray]:
        missing = self.missing_shards()
        if missing:
            raise FileNotFoundError(
                f"{self.folder} misses {len(missing)} of {self.num_shards} shards (first: {missing[0]}): rerun "
                "recipes/build_index.py on it to embed them."
            )
        return [
            np.load(self.shard_path(s, kind), mmap_mode="r" if mmap else None) for s in range(self.num_shards)
        ]

    def embeddings(self) -> EmbeddingMatrix:
        """All shards as one memory-mapped ``(N, D)`` matrix (nothing is read until a block is)."""
        return EmbeddingMatrix(self._load_all("embeddings", mmap=True))

    def row_ids(self) -> np.ndarray:
        """``(N,)`` int64 split positions of the embedded rows, in shard order."""
        return np.concatenate(self._load_all("rows", mmap=False))

    def group_ids(self) -> np.ndarray:
        """``(N,)`` int64 group ids of the embedded rows, in shard order."""
        return np.concatenate(self._load_all("groups", mmap=False))


def check_manifest(existing: dict, wanted: dict, path: str | os.PathLike = MANIFEST_FILE) -> None:
    """Raise `ManifestMismatchError` naming every `MANIFEST_IDENTITY` field on which `existing` and `wanted`
    disagree."""
    differences = [field for field in MANIFEST_IDENTITY if existing.get(field) != wanted.get(field)]
    if not differences:
        return
    details = []
    for field in differences:
        old, new = existing.get(field), wanted.get(field)
        if field == "model_fingerprint":
            old, new = f"{existing.get('model')} ({old})", f"{wanted.get('model')} ({new})"
        elif field == "dataset_fingerprint":
            old, new = f"{existing.get('dataset')} ({old})", f"{wanted.get('dataset')} ({new})"
        details.append(f"{field}: {old!r} there, {new!r} in this run")
    raise ManifestMismatchError(
        f"{path} was written by another build; it disagrees with this run on {', '.join(differences)} ("
        + "; ".join(details)
        + "). Its shards cannot be mixed with this run's: rerun with the same settings to resume it, pass "
        "--overwrite to discard them, or choose another --output_dir."
    )


def build_manifest(
    *,
    model: str,
    model_fingerprint: str,
    dataset: str,
    dataset_config_name: str | None,
    dataset_fingerprint: str | None,
    split: str,
    max_items: int | None,
    modality: tuple[str, ...],
    columns: RetrievalColumns,
    num_rows: int,
    shard_size: int,
    batch_size: int,
) -> dict:
    """The manifest of a build (see `MANIFEST_IDENTITY` for the fields two runs must agree on)."""
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}.")
    if num_rows < 1:
        raise ValueError(f"Split {split!r} of {dataset} has no rows: there is nothing to index.")
    return {
        "format_version": FORMAT_VERSION,
        "model": model,
        "model_fingerprint": model_fingerprint,
        "dataset": dataset,
        "dataset_config_name": dataset_config_name,
        "dataset_fingerprint": dataset_fingerprint,
        "split": split,
        "max_items": max_items,
        "modality": "+".join(modality),
        "columns": asdict(columns),
        "num_rows": num_rows,
        "shard_size": shard_size,
        "num_shards": math.ceil(num_rows / shard_size),
        "batch_size": batch_size,
        "dim": None,
    }


# ---------------------------------------------------------------------------------------------------- embedding
@torch.no_grad()
def embed_shards(
    model,
    processor,
    dataset: datasets.Dataset,
    store: EmbeddingStore,
    *,
    num_workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    shards: Sequence[int] | None = None,
) -> list[int]:
    """Embed the shards of `store` that are missing (or `shards`), one at a time, writing each as it is done.

    `dataset` is the split the manifest describes (``num_rows`` rows, the first ``max_items`` already selected).
    Rows ``[i S, (i + 1) S)`` are embedded with `embed_dataset` in batches of the manifest's ``batch_size``; with
    ``S`` a multiple of the batch size, the batches (and so the captions' padding) are those of one pass over the
    whole split, and the embeddings equal it. A model that reads transcripts gets them per shard (`add_transcripts`,
    kept in `cache_dir` when given). Returns the shards embedded.
    """
    manifest = store.manifest
    if len(dataset) != manifest["num_rows"]:
        raise ValueError(
            f"The dataset has {len(dataset)} rows but {store.manifest_path} describes {manifest['num_rows']}."
        )
    combination = parse_modality(manifest["modality"])
    columns = RetrievalColumns(**manifest["columns"])
    resolve_columns(dataset, columns, combination)
    dataset = prepare_for_lazy_decoding(dataset, columns)
    collator = RetrievalCollator(processor, columns=columns, modalities=combination)
    todo = list(store.missing_shards() if shards is None else shards)
    for shard in tqdm(todo, desc=f"embedding {manifest['modality']} shards", unit="shard"):
        start, end = store.shard_range(shard)
        rows = dataset.select(range(start, end))
        if "audio" in combination and transcribes_audio(model):
            rows = add_transcripts(
                rows,
                model,
                processor,
                columns,
                manifest["batch_size"],
                description=f"transcribing shard {shard}",
                cache_dir=cache_dir,
            )
        embeds, groups = embed_dataset(
            model,
            collator,
            rows,
            [combination],
            manifest["batch_size"],
            num_workers,
            description=f"shard {shard}",
        )
        store.write_shard(shard, embeds[combination].numpy(), np.arange(start, end), groups.numpy())
    return todo


@torch.no_grad()
def embed_texts(model, processor, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """``(len(texts), D)`` float32 text embeddings of `texts` (queries), as the model embeds captions."""
    collator = RetrievalCollator(processor, columns=RetrievalColumns(), modalities=("text",))
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = collator([{"text": text} for text in texts[start : start + batch_size]])
        batch.pop("group_ids")
        batch = {k: v.to(device) for k, v in batch.items()}
        chunks.append(model.encode([("text",)], **batch)[("text",)].float().cpu().numpy())
    return np.concatenate(chunks)


# ----------------------------------------------------------------------------------------------- the matrix
class EmbeddingMatrix:
    """Several ``(n_i, D)`` arrays (memory-mapped shards, or one memory-mapped ``.npy``) read as one ``(N, D)``
    matrix, a block or a set of rows at a time: the whole matrix is never loaded."""

    def __init__(self, parts: Sequence[np.ndarray]):
        if not parts or any(part.ndim != 2 for part in parts):
            raise ValueError("EmbeddingMatrix needs one or more 2-D arrays (N_i, D).")
        dims = {part.shape[1] for part in parts}
        if len(dims) != 1:
            raise ValueError(f"The parts have different dimensions {sorted(dims)}; they must share one D.")
        self.parts = list(parts)
        self.offsets = np.cumsum([0, *(len(part) for part in parts)])
        self.num_rows, self.dim = int(self.offsets[-1]), dims.pop()
        if self.num_rows == 0:
            raise ValueError("EmbeddingMatrix has no rows.")

    def __len__(self) -> int:
        return self.num_rows

    def blocks(self, max_rows: int = 65_536) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, block)``: float32 C-contiguous copies of at most `max_rows` consecutive rows, in order."""
        for offset, part in zip(self.offsets[:-1], self.parts, strict=True):
            for start in range(0, len(part), max_rows):
                yield int(offset) + start, np.array(part[start : start + max_rows], dtype=np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), D)`` float32 copy of `rows` (any order, repeats allowed), read in ascending order."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise IndexError(f"Row ids must be in [0, {self.num_rows}), got [{rows.min()}, {rows.max()}].")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        bounds = np.searchsorted(sorted_rows, self.offsets)
        for part, offset, lo, hi in zip(self.parts, self.offsets, bounds[:-1], bounds[1:], strict=False):
            if hi > lo:
                out[order[lo:hi]] = part[sorted_rows[lo:hi] - offset]
        return out


def _normalized(block: np.ndarray) -> np.ndarray:
    import faiss

    block = np.ascontiguousarray(block, dtype=np.float32)
    faiss.normalize_L2(block)
    return block


# ------------------------------------------------------------------------------------------------ the index
@dataclass
class IndexOptions:
    """How to build (and by default search) an index; see the module's docstring for the index types."""

    index_type: str = "auto"  # auto | flat | hnsw | ivfpq
    flat_max: int = 100_000  # auto: exact flat index up to this many vectors
    hnsw_max: int = 2_000_000  # auto: HNSW up to this many, IVF-PQ above
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 64
    nlist: int | None = None  # default: the power of two nearest 4 sqrt(N), at most N / 39
    pq_m: int = 64  # sub-quantizers: bytes per code at 8 bits; must divide D
    pq_bits: int = 8
    nprobe: int = 16
    train_size: int | None = None  # default: min(N, 256 nlist, 1M)
    kmeans_iterations: int = 20
    coarse_quantizer: str = "auto"  # auto | flat | hnsw (auto: hnsw above HNSW_QUANTIZER_ABOVE lists)
    seed: int = 0
    add_batch_size: int = 65_536  # rows copied, normalised and added at a time


def choose_index_type(num_vectors: int, flat_max: int = 100_000, hnsw_max: int = 2_000_000) -> str:
    """``"flat"`` for at most `flat_max` vectors, ``"hnsw"`` for at most `hnsw_max`, ``"ivfpq"`` above."""
    if num_vectors < 1:
        raise ValueError(f"num_vectors must be >= 1, got {num_vectors}.")
    if not 0 <= flat_max <= hnsw_max:
        raise ValueError(f"Thresholds must satisfy 0 <= flat_max <= hnsw_max, got {flat_max} and {hnsw_max}.")
    if num_vectors <= flat_max:
        return "flat"
    return "hnsw" if num_vectors <= hnsw_max else "ivfpq"


def default_nlist(num_vectors: int) -> int:
    """The power of two nearest ``4 sqrt(N)`` (in log scale), capped so that every list gets >= 39 training rows."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(num_vectors), 1)))
    while nlist > 1 and nlist * 39 > num_vectors:
        nlist //= 2
    return nlist


def resolve_index_parameters(options: IndexOptions, num_vectors: int, dim: int) -> dict:
    """``{"index_type", "build": {...}, "search": {...}}``: what `options` mean for ``(num_vectors, dim)``."""
    if options.index_type == "auto":
        index_type = choose_index_type(num_vectors, options.flat_max, options.hnsw_max)
    elif options.index_type in INDEX_TYPES:
        index_type = options.index_type
    else:
        raise ValueError(f"index_type must be auto, {', '.join(INDEX_TYPES)}; got {options.index_type!r}.")
    if index_type == "flat":
        return {"index_type": "flat", "build": {}, "search": {}}
    if index_type == "hnsw":
        if options.hnsw_m < 2 or options.ef_construction < 1 or options.ef_search < 1:
            raise ValueError("hnsw_m must be >= 2, ef_construction and ef_search >= 1.")
        return {
            "index_type": "hnsw",
            "build": {"hnsw_m": options.hnsw_m, "ef_construction": options.ef_construction},
            "search": {"ef_search": options.ef_search},
        }
    nlist = options.nlist or default_nlist(num_vectors)
    if not 1 <= nlist <= num_vectors:
        raise ValueError(f"nlist must be between 1 and the number of vectors {num_vectors}, got {nlist}.")
    if options.pq_m < 1 or dim % options.pq_m:
        raise ValueError(
            f"pq_m={options.pq_m} must divide the dimension {dim} (each sub-quantizer codes D / pq_m "
            "dimensions); pass --pq_m with a divisor of it."
        )
    if not 1 <= options.pq_bits <= 16:
        raise ValueError(f"pq_bits must be between 1 and 16, got {options.pq_bits}.")
    train_size = min(num_vectors, options.train_size or min(256 * nlist, 1_000_000))
    if train_size < max(nlist, 2**options.pq_bits):
        raise ValueError(
            f"IVF-PQ needs at least max(nlist, 2**pq_bits) = {max(nlist, 2**options.pq_bits)} training rows, got "
            f"{train_size}: index more vectors, lower nlist/pq_bits, or use index_type flat or hnsw."
        )
    if train_size < 39 * nlist:
        logger.warning(
            "IVF-PQ: %d training rows for %d lists (fewer than the 39 per list k-means needs to be reliable).",
            train_size,
            nlist,
        )
    quantizer = options.coarse_quantizer
    if quantizer == "auto":
        quantizer = "hnsw" if nlist > HNSW_QUANTIZER_ABOVE else "flat"
    if quantizer not in COARSE_QUANTIZERS:
        raise ValueError(f"coarse_quantizer must be auto, flat or hnsw, got {options.coarse_quantizer!r}.")
    if options.nprobe < 1 or options.kmeans_iterations < 1:
        raise ValueError("nprobe and kmeans_iterations must be >= 1.")
    search = {"nprobe": min(options.nprobe, nlist)}
    if quantizer == "hnsw":
        search["quantizer_ef_search"] = max(options.ef_search, 2 * search["nprobe"])
    return {
        "index_type": "ivfpq",
        "build": {
            "nlist": nlist,
            "pq_m": options.pq_m,
            "pq_bits": options.pq_bits,
            "train_size": train_size,
            "kmeans_iterations": options.kmeans_iterations,
            "coarse_quantizer": quantizer,
            "seed": options.seed,
        },
        "search": search,
    }


def build_index(
    matrix: EmbeddingMatrix, options: IndexOptions | None = None, progress: bool = True
) -> tuple[faiss.Index, dict]:
    """Build the index `options` describe over the rows of `matrix` (L2-normalised, inner product).

    Rows are copied, normalised and added `options.add_batch_size` at a time; an IVF-PQ index is first trained on
    ``train_size`` rows drawn at random (seeded). Returns the index (FAISS ids = row positions in `matrix`) and its
    config: ``index_type``, ``build`` and ``search`` parameters, ``num_vectors``, ``dim``, ``train_seconds``,
    ``add_seconds``, ``build_seconds`` and ``memory_bytes`` (the index's serialized size, which is its memory
    footprint up to a few headers).
    """
    import faiss

    options = options or IndexOptions()
    num_vectors, dim = matrix.num_rows, matrix.dim
    parameters = resolve_index_parameters(options, num_vectors, dim)
    build = parameters["build"]
    started = time.perf_counter()
    if parameters["index_type"] == "flat":
        index = faiss.IndexFlatIP(dim)
    elif parameters["index_type"] == "hnsw":
        index = faiss.IndexHNSWFlat(dim, build["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = build["ef_construction"]
    else:
        index = _trained_ivfpq(matrix, build)
    train_seconds = time.perf_counter() - started
    blocks = matrix.blocks(options.add_batch_size)
    with tqdm(total=num_vectors, desc=f"adding to the {parameters['index_type']} index", unit="vector",
              disable=not progress) as bar:  # fmt: skip
        for _, block in blocks:
            index.add(_normalized(block))
            bar.update(len(block))
    apply_search_parameters(index, parameters["search"])
    build_seconds = time.perf_counter() - started
    config = {
        **parameters,
        "metric": "inner_product",
        "normalized": True,
        "num_vectors": num_vectors,
        "dim": dim,
        "train_seconds": round(train_seconds, 3),
        "add_seconds": round(build_seconds - train_seconds, 3),
        "build_seconds": round(build_seconds, 3),
        "memory_bytes": index_memory_bytes(index),
        "faiss_version": faiss.__version__,
    }
    if options.index_type == "auto":
        config["chosen_by"] = {"flat_max": options.flat_max, "hnsw_max": options.hnsw_max}
    return index, config


def _trained_ivfpq(matrix: EmbeddingMatrix, build: dict) -> faiss.Index:
    """An IVF-PQ index whose coarse centroids (spherical k-means) and product quantizer are trained on a seeded
    random sample of `matrix`."""
    import faiss

    dim, nlist = matrix.dim, build["nlist"]
    rng = np.random.default_rng(build["seed"])
    sample = np.sort(rng.choice(matrix.num_rows, size=build["train_size"], replace=False))
    train = _normalized(matrix.take(sample))
    kmeans = faiss.Kmeans(
        dim,
        nlist,
        niter=build["kmeans_iterations"],
        seed=build["seed"],
        spherical=True,
        max_points_per_centroid=max(1, math.ceil(len(train) / nlist)),  # the sample is already drawn
    )
    kmeans.train(train)
    if build["coarse_quantizer"] == "hnsw":
        quantizer = faiss.IndexHNSWFlat(dim, QUANTIZER_HNSW_M, faiss.METRIC_INNER_PRODUCT)
    else:
        quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(kmeans.centroids)
    index = faiss.IndexIVFPQ(
        quantizer, dim, nlist, build["pq_m"], build["pq_bits"], faiss.METRIC_INNER_PRODUCT
    )
    index.pq.cp.seed = build["seed"]
    index.train(train)  # the quantizer holds nlist centroids: only the product quantizer is trained
    return index


def apply_search_parameters(index: faiss.Index, search: dict) -> None:
    """Set ``ef_search`` (HNSW), ``nprobe`` and ``quantizer_ef_search`` (IVF) on `index`."""
    import faiss

    if "ef_search" in search:
        faiss.downcast_index(index).hnsw.efSearch = int(search["ef_search"])
    if "nprobe" in search:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = int(min(search["nprobe"], ivf.nlist))
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efSearch = int(search.get("quantizer_ef_search", max(64, 2 * ivf.nprobe)))


def index_memory_bytes(index: faiss.Index) -> int:
    """Bytes of `index` as FAISS serializes it: vectors or codes, ids, graph links, centroids (counted, not kept)."""
    import faiss

    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total


# ------------------------------------------------------------------------------------------- save, load, search
def save_index(folder: str | os.PathLike, index: faiss.Index, ids: np.ndarray, config: dict) -> None:
    """Write ``index.faiss``, ``ids.npy`` and ``index_config.json`` atomically (the config last: a folder with a
    config has the index it describes)."""
    import faiss

    folder = Path(folder)
    if len(ids) != index.ntotal:
        raise ValueError(f"ids has {len(ids)} entries for an index of {index.ntotal} vectors.")
    (folder / INDEX_CONFIG_FILE).unlink(missing_ok=True)
    temporary = _temporary(folder / INDEX_FILE)
    faiss.write_index(index, str(temporary))
    os.replace(temporary, folder / INDEX_FILE)
    save_npy_atomic(folder / IDS_FILE, np.asarray(ids, dtype=np.int64))
    write_text_atomic(folder / INDEX_CONFIG_FILE, json.dumps(config, indent=2) + "\n")


@dataclass
class BuiltIndex:
    """A built index folder: the FAISS index, the split position of each vector (`ids`) and `config`."""

    folder: Path
    index: Any
    ids: np.ndarray
    config: dict

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int, rerank: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` items for each query, best first: ``(scores, ids)``, ``(N_q, k)`` float32 cosine similarities
        and int64 ids (split positions; ``-1`` where an approximate index found fewer than `k`).

        Queries are L2-normalised here. With `rerank`, the index's top ``max(rerank, k)`` candidates are re-scored
        exactly from the folder's embedding shards (one memory-mapped read per candidate), which restores most of
        the recall an IVF-PQ index loses to its lossy codes.
        """
        queries = _as_queries(queries, self.config["dim"])
        if not 1 <= k <= self.index.ntotal:
            raise ValueError(
                f"k must be between 1 and the number of indexed items {self.index.ntotal}, got {k}."
            )
        if rerank is None:
            scores, positions = self.index.search(queries, k)
        else:
            _, candidates = self.index.search(queries, min(max(rerank, k), self.index.ntotal))
            scores, positions = rerank_exact(queries, candidates, EmbeddingStore(self.folder).embeddings(), k)
        return scores, np.where(positions >= 0, self.ids[np.maximum(positions, 0)], -1)


def load_index(
    folder: str | os.PathLike, nprobe: int | None = None, ef_search: int | None = None, mmap: bool = False
) -> BuiltIndex:
    """Load an index folder written by `save_index` (`recipes/build_index.py`), with its search parameters, or
    `nprobe` / `ef_search` instead. `mmap` maps an IVF index's lists or a flat index's vectors from disk."""
    import faiss

    folder = Path(folder)
    config_path = folder / INDEX_CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} does not exist: build the index first (python recipes/build_index.py ... "
            f"--output_dir {folder})."
        )
    config = json.loads(config_path.read_text())
    index = faiss.read_index(str(folder / INDEX_FILE), faiss.IO_FLAG_MMAP if mmap else 0)
    ids = np.load(folder / IDS_FILE)
    if index.ntotal != config["num_vectors"] or len(ids) != index.ntotal or index.d != config["dim"]:
        raise ValueError(
            f"{folder} is inconsistent: index.faiss holds {index.ntotal} vectors of dimension {index.d}, ids.npy "
            f"{len(ids)} ids and index_config.json says {config['num_vectors']} x {config['dim']}. Rebuild it "
            "(recipes/build_index.py --rebuild_index)."
        )
    search = dict(config["search"])
    if nprobe is not None:
        if config["index_type"] != "ivfpq":
            raise ValueError(
                f"nprobe applies to an ivfpq index; {folder} holds a {config['index_type']} one."
            )
        search["nprobe"] = nprobe
        if "quantizer_ef_search" in search:
            search["quantizer_ef_search"] = max(search["quantizer_ef_search"], 2 * nprobe)
    if ef_search is not None:
        if config["index_type"] != "hnsw":
            raise ValueError(
                f"ef_search applies to an hnsw index; {folder} holds a {config['index_type']} one."
            )
        search["ef_search"] = ef_search
    apply_search_parameters(index, search)
    return BuiltIndex(folder, index, ids, {**config, "search": search})


def rerank_exact(
    queries: np.ndarray, candidates: np.ndarray, matrix: EmbeddingMatrix, k: int, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score each query's candidate rows (``(N_q, C)`` positions, ``-1`` for none) exactly against the
    L2-normalised rows of `matrix` and keep the best `k`: ``(scores, positions)``, ``(N_q, k)``."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    positions = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(queries), chunk):
        block = candidates[start : start + chunk]
        unique, inverse = np.unique(np.maximum(block, 0), return_inverse=True)
        vectors = _normalized(matrix.take(unique))
        exact = np.einsum("qd,qcd->qc", queries[start : start + chunk], vectors[inverse.reshape(block.shape)])
        exact = np.where(block >= 0, exact, -np.inf)
        # Best first; ties by position, so the order does not depend on the candidates' order.
        order = np.lexsort((block, -exact), axis=1)[:, :k]
        width = order.shape[1]
        scores[start : start + chunk, :width] = np.take_along_axis(exact, order, axis=1)
        positions[start : start + chunk, :width] = np.where(
            np.isfinite(scores[start : start + chunk, :width]), np.take_along_axis(block, order, axis=1), -1
        )
    return scores, positions


def _as_queries(queries: np.ndarray | torch.Tensor, dim: int) -> np.ndarray:
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().to(device="cpu", dtype=torch.float32).numpy()
    queries = np.array(queries, dtype=np.float32, ndmin=2)  # a copy: normalised in place
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(
            f"Queries must be (N_q, {dim}) embeddings of the index's space, got {queries.shape}."
        )
    return _normalized(queries)
