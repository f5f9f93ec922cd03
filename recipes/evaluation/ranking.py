"""Cross-modal retrieval scoring on precomputed embeddings.

Queries and gallery items are L2-normalised embeddings of shape ``(N, D)``; the similarity of a query and a
gallery item is their dot product. A query may have several correct ("positive") gallery items, e.g. the five
captions of an image when retrieving text from images; its rank is the 1-based rank of its best-ranked
positive, and Recall@K is the fraction of queries whose rank is at most K. Ties are ranked pessimistically: a
gallery item scoring the same as the best positive is ranked ahead of it (see `rank_of_positives`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    import evaluate
    import faiss

FaissIndexType = Literal["flat", "ivf", "hnsw"]

RECALL_METRIC_PATH = Path(__file__).resolve().parents[1] / "metrics" / "retrieval_recall"

_HNSW_M = 32

# Tie tolerance: a score within ``TIE_RTOL * |query| * max |gallery item|`` (that product bounds every score
# of the query's row, and is 1 for L2-normalised embeddings) of the best positive's score counts as a tie.
# Identical embeddings usually score bit-identically within one matrix product, but FAISS's kernels, the
# directly computed score of a positive and torch's matrix product round float32 sums differently (by up to
# a few 1e-7 for 512-d unit vectors). Without a tolerance a collapsed model could still win ties by rounding
# luck, and the torch and FAISS paths would disagree on them. 1e-6 is about 8 float32 ulps at 1, far below
# any score difference that separates two real candidates.
TIE_RTOL = 1e-6


def rank_of_positives(
    query_embeds: torch.Tensor,
    gallery_embeds: torch.Tensor,
    positives: Sequence[Sequence[int]] | torch.Tensor,
    *,
    chunk_size: int = 4096,
    faiss_above: int | None = 200_000,
    faiss_index: FaissIndexType = "flat",
    faiss_top_k: int = 1000,
    nprobe: int = 32,
) -> torch.Tensor:
    """Returns the pessimistic 1-based rank of each query's best-ranked positive gallery item.

    The rank of a query is ``1 + #{non-positive gallery items scoring >= its best positive}``: ties are
    ranked pessimistically, every item tied with the best positive is placed ahead of it, so ranks are
    integers and Recall@K stays a plain ``rank <= K``. The query's other positives never count against it
    (a query's rank is that of its first positive, whichever of several tied positives that is). A collapsed
    model whose embeddings are all identical thus gets rank ``N_g - P + 1`` for a query with ``P`` positives
    (``N_g`` for one), not rank 1. Scores within ``1e-6 * |query| * max |gallery item|`` of the best
    positive's score count as ties, so float rounding of identical embeddings cannot break them.

    Galleries of at most ``faiss_above`` items are scored exactly with torch, ``chunk_size`` queries at a
    time: only a ``(chunk_size, N_g)`` score block is held in memory and rows are never sorted. Larger
    galleries are searched with a FAISS index (``"flat"``: exact ``IndexFlatIP``; ``"ivf"``: ``IndexIVFFlat``
    with ``nlist ~ sqrt(N_g)`` lists, ``nprobe`` of them searched; ``"hnsw"``: ``IndexHNSWFlat``) for the top
    ``faiss_top_k + P_max`` items per query, ``P_max`` being the largest number of positives of a query. A
    query gets the rank above when fewer than ``faiss_top_k`` non-positive items score ``>=`` its best
    positive, which the list then shows in full, and ``min(faiss_top_k + 1, N_g)`` otherwise: when its
    positives are not in the list, or when the list's last item ties the best positive (at least
    ``faiss_top_k`` non-positive items tie or beat it). Ranks above ``faiss_top_k`` are reported as
    ``faiss_top_k + 1``, so on that path the ranks equal the torch path's clamped to ``faiss_top_k + 1``
    with ``"flat"`` (Recall@K for ``K <= faiss_top_k`` is exact; approximate with ``"ivf"``/``"hnsw"``)
    while median and mean ranks are lower bounds.

    Args:
        query_embeds: ``(N_q, D)`` float query embeddings.
        gallery_embeds: ``(N_g, D)`` float gallery embeddings.
        positives: for each query, the gallery indices of its positives: a list of ``N_q`` lists, a
            ``(N_q,)`` LongTensor (one positive per query) or a ``(N_q, P)`` LongTensor padded with ``-1``.
            Use `positives_from_ids` to build them from item ids.
        chunk_size: queries scored per block.
        faiss_above: gallery size above which FAISS is used; ``None`` always uses torch, ``0`` always FAISS.
        faiss_index: FAISS index type, ``"flat"``, ``"ivf"`` or ``"hnsw"``.
        faiss_top_k: number of nearest gallery items retrieved per query on the FAISS path.
        nprobe: inverted lists searched per query by the ``"ivf"`` index.

    Returns:
        ``(N_q,)`` int64 CPU tensor of ranks in ``[1, N_g]``.
    """
    _check_embeddings(query_embeds, gallery_embeds)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    if faiss_index not in ("flat", "ivf", "hnsw"):
        raise ValueError(f"faiss_index must be 'flat', 'ivf' or 'hnsw', got {faiss_index!r}.")
    num_queries, num_gallery = query_embeds.shape[0], gallery_embeds.shape[0]
    rows, cols = _positive_pairs(positives, num_queries, num_gallery)
    if faiss_above is not None and num_gallery > faiss_above:
        if faiss_top_k < 1:
            raise ValueError(f"faiss_top_k must be >= 1, got {faiss_top_k}.")
        return _ranks_faiss(
            query_embeds,
            gallery_embeds,
            rows,
            cols,
            chunk_size,
            faiss_index,
            min(faiss_top_k, num_gallery),
            nprobe,
        )
    return _ranks_torch(query_embeds, gallery_embeds, rows, cols, chunk_size)


def search_topk(
    query_embeds: torch.Tensor,
    gallery_embeds: torch.Tensor,
    k: int,
    chunk_size: int = 4096,
    use_faiss: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` gallery items for each query by dot product, best first.

    Args:
        query_embeds: ``(N_q, D)`` float query embeddings.
        gallery_embeds: ``(N_g, D)`` float gallery embeddings.
        k: number of items returned per query, at most ``N_g``.
        chunk_size: queries scored per block on the torch path (a ``(chunk_size, N_g)`` block in memory).
        use_faiss: search a FAISS ``IndexFlatIP`` instead of chunked torch matrix products.

    Returns:
        ``(scores, indices)``: ``(N_q, k)`` float32 similarities and ``(N_q, k)`` int64 gallery indices,
        on the CPU.
    """
    _check_embeddings(query_embeds, gallery_embeds)
    if not 1 <= k <= gallery_embeds.shape[0]:
        raise ValueError(f"k must be between 1 and the gallery size {gallery_embeds.shape[0]}, got {k}.")
    if use_faiss:
        index = build_faiss_index(gallery_embeds)
        scores, indices = index.search(_to_faiss(query_embeds), k)
        return torch.from_numpy(scores), torch.from_numpy(indices)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    query, gallery = _score_inputs(query_embeds, gallery_embeds)
    scores, indices = [], []
    for start in range(0, query.shape[0], chunk_size):
        # The (c, N_g) score block is a temporary, freed before the next one is allocated.
        top = (query[start : start + chunk_size] @ gallery.T).topk(k, dim=1)  # (c, k)
        scores.append(top.values.float().cpu())
        indices.append(top.indices.cpu())
    return torch.cat(scores), torch.cat(indices)


def build_faiss_index(
    gallery_embeds: torch.Tensor, index_type: FaissIndexType = "flat", nprobe: int = 32
) -> faiss.Index:
    """Builds an inner-product FAISS index over ``(N_g, D)`` gallery embeddings.

    ``"flat"`` is exact; ``"ivf"`` clusters the gallery into ``nlist ~ sqrt(N_g)`` lists (capped so that each
    centroid has at least 39 training points) and searches ``nprobe`` of them; ``"hnsw"`` builds a graph with
    32 links per node.
    """
    import faiss

    gallery = _to_faiss(gallery_embeds)
    num_gallery, dim = gallery.shape
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif index_type == "ivf":
        nlist = max(1, min(round(math.sqrt(num_gallery)), num_gallery // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(gallery)
        index.nprobe = min(nprobe, nlist)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, _HNSW_M, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"index_type must be 'flat', 'ivf' or 'hnsw', got {index_type!r}.")
    index.add(gallery)
    return index


def retrieval_metrics(
    ranks: torch.Tensor | np.ndarray | Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict:
    """Recall@K, median and mean rank from 1-based ranks.

    Args:
        ranks: ``(N_q,)`` 1-based rank of each query's best positive (see `rank_of_positives`).
        ks: cut-offs K reported as ``"R@K"``.

    Returns:
        ``{"R@K": fraction of ranks <= K for K in ks, "median_rank": ..., "mean_rank": ...}``, all floats;
        the median of an even number of ranks is the mean of the two middle ones.
    """
    if isinstance(ranks, torch.Tensor):
        ranks = ranks.detach().cpu().numpy()
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D sequence, got shape {ranks.shape}.")
    if not np.all(np.equal(np.mod(ranks, 1), 0)) or ranks.min() < 1:
        raise ValueError("ranks must be integers >= 1 (ranks are 1-based); got values below 1 or fractional.")
    if any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}.")
    metrics = {f"R@{int(k)}": float(np.mean(ranks <= k)) for k in ks}
    metrics["median_rank"] = float(np.median(ranks))
    metrics["mean_rank"] = float(np.mean(ranks))
    return metrics


def chance_recall(num_gallery: int, num_positives_per_query: int | Sequence[int], k: int) -> float:
    """Expected Recall@K of a uniformly random ranking.

    A query with ``p`` positives among ``N`` gallery items is missed by the top ``k`` with probability
    ``C(N - p, k) / C(N, k)``; the result is ``1`` minus that, averaged over queries.

    Args:
        num_gallery: gallery size ``N``.
        num_positives_per_query: ``p`` shared by all queries, or one ``p`` per query.
        k: cut-off.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    counts, weights = _positive_count_histogram(num_gallery, num_positives_per_query)
    hits = [1.0 - _miss_probability(num_gallery, int(p), k) for p in counts]
    return float(np.average(hits, weights=weights))


def chance_median_rank(num_gallery: int, num_positives_per_query: int | Sequence[int]) -> float:
    """Median rank of the best positive under a uniformly random ranking.

    Uses the same convention as `retrieval_metrics`: where the rank distribution puts exactly half its mass
    at or below ``r``, the median is ``r + 0.5`` (e.g. ``(N + 1) / 2`` for one positive per query).
    """
    counts, weights = _positive_count_histogram(num_gallery, num_positives_per_query)
    cutoffs = np.arange(num_gallery, dtype=np.float64)  # i = 0 .. N-1
    # P(rank > r) = prod_{i < r} (N - p - i) / (N - i), for r = 1 .. N.
    miss = sum(
        w * np.cumprod(np.clip((num_gallery - p - cutoffs) / (num_gallery - cutoffs), 0.0, None))
        for p, w in zip(counts, weights, strict=True)
    ) / np.sum(weights)
    cdf = 1.0 - miss  # (N,): P(rank <= r)
    r = int(np.argmax(cdf >= 0.5 - 1e-12))
    return r + 1.5 if math.isclose(cdf[r], 0.5, rel_tol=1e-9) else r + 1.0


def positives_from_ids(query_ids: Sequence[Hashable], gallery_ids: Sequence[Hashable]) -> list[list[int]]:
    """Gallery indices sharing each query's item id.

    E.g. for text-to-image retrieval ``query_ids`` holds the image id of each caption and ``gallery_ids`` the
    id of each image (one positive per caption); for image-to-text the roles swap and each image gets the
    indices of all its captions.

    Args:
        query_ids: ``N_q`` hashable ids (tensors and arrays are converted with ``.tolist()``).
        gallery_ids: ``N_g`` hashable ids.

    Returns:
        ``N_q`` lists of gallery indices, in gallery order.
    """
    query_ids, gallery_ids = _as_id_list(query_ids), _as_id_list(gallery_ids)
    by_id: dict[Hashable, list[int]] = defaultdict(list)
    for index, item_id in enumerate(gallery_ids):
        by_id[item_id].append(index)
    positives = []
    for index, item_id in enumerate(query_ids):
        if item_id not in by_id:
            raise ValueError(
                f"Query {index} has id {item_id!r}, which is not in gallery_ids: every query needs at least "
                "one gallery item with the same id (check that both id lists come from the same split)."
            )
        positives.append(list(by_id[item_id]))
    return positives


def load_recall_metric() -> evaluate.EvaluationModule:
    """Loads the ``retrieval_recall`` `evaluate` metric shipped with this package (works offline)."""
    import evaluate

    return evaluate.load(str(RECALL_METRIC_PATH))


def _check_embeddings(query_embeds: torch.Tensor, gallery_embeds: torch.Tensor) -> None:
    for name, embeds in (("query_embeds", query_embeds), ("gallery_embeds", gallery_embeds)):
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or not embeds.is_floating_point():
            shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(f"{name} must be a 2-D float tensor of shape (N, D), got {shape}.")
    if query_embeds.shape[1] != gallery_embeds.shape[1]:
        raise ValueError(
            f"Embedding dimensions differ: query_embeds has D={query_embeds.shape[1]} but gallery_embeds has "
            f"D={gallery_embeds.shape[1]}; embed queries and gallery into the same shared space."
        )
    if gallery_embeds.shape[0] == 0:
        raise ValueError("gallery_embeds is empty (0 items): there is nothing to retrieve from.")


def _positive_pairs(
    positives: Sequence[Sequence[int]] | torch.Tensor, num_queries: int, num_gallery: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattens positives into ``(rows, cols)`` int64 pairs, sorted by query row."""
    if isinstance(positives, torch.Tensor):
        if positives.dtype.is_floating_point or positives.ndim not in (1, 2):
            raise ValueError(
                f"positives tensor must be an integer tensor of shape (N_q,) or (N_q, P), got "
                f"{positives.dtype} of shape {tuple(positives.shape)}."
            )
        positives = positives.long().cpu()
        if positives.ndim == 1:
            positives = positives[:, None]
        length = positives.shape[0]
        rows, cols = (positives >= 0).nonzero(as_tuple=True)
        cols = positives[rows, cols]
    else:
        length = len(positives)
        per_query = [[p] if isinstance(p, int | np.integer) else list(p) for p in positives]
        rows = torch.repeat_interleave(
            torch.arange(length), torch.tensor([len(p) for p in per_query], dtype=torch.long)
        )
        cols = torch.tensor([i for p in per_query for i in p], dtype=torch.long)
    if length != num_queries:
        raise ValueError(
            f"positives has {length} entries but there are {num_queries} queries; give one per query."
        )
    counts = torch.bincount(rows, minlength=num_queries)
    if (counts == 0).any():
        query = int((counts == 0).nonzero()[0])
        raise ValueError(
            f"Query {query} has no positive gallery item: every query needs at least one (drop queries whose "
            "item is missing from the gallery)."
        )
    out_of_range = (cols < 0) | (cols >= num_gallery)
    if out_of_range.any():
        pair = int(out_of_range.nonzero()[0])
        raise ValueError(
            f"Query {int(rows[pair])} has positive index {int(cols[pair])}, outside the gallery of "
            f"{num_gallery} items."
        )
    return rows, cols


def _ranks_torch(
    query_embeds: torch.Tensor,
    gallery_embeds: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    query, gallery = _score_inputs(query_embeds, gallery_embeds)
    num_queries, num_gallery = query.shape[0], gallery.shape[0]
    device = query.device
    # Counts are summed in the score dtype, exact for integers up to 2 / eps (2**24 for float32).
    count_step = int(2 / torch.finfo(query.dtype).eps)
    tie_scale = TIE_RTOL * gallery.norm(dim=1).max()  # times |query|: the tie tolerance of each row
    offsets = _row_offsets(rows, num_queries)
    rows, cols = rows.to(device), cols.to(device)
    ranks = torch.empty(num_queries, dtype=torch.long)
    for start in range(0, num_queries, chunk_size):
        end = min(start + chunk_size, num_queries)
        sims = query[start:end] @ gallery.T  # (c, N_g)
        lo, hi = offsets[start], offsets[end]
        local_rows, local_cols = rows[lo:hi] - start, cols[lo:hi]
        # Best positive score per query, read from the same score block as the candidates' scores.
        best = sims.new_full((end - start,), -math.inf)
        best.scatter_reduce_(0, local_rows, sims[local_rows, local_cols], reduce="amax")  # (c,)
        threshold = best - tie_scale * query[start:end].norm(dim=1)  # scores >= threshold tie or beat it
        sims[local_rows, local_cols] = -math.inf  # a query's own positives never count against it
        ahead = torch.zeros(end - start, dtype=torch.long, device=device)
        for col in range(0, num_gallery, count_step):
            # In-place comparison and float sum: summing a bool comparison would allocate an int64
            # copy of the whole block.
            ahead += sims[:, col : col + count_step].ge_(threshold[:, None]).sum(1).long()
        del sims  # otherwise two score blocks are alive while the next one is computed
        ranks[start:end] = ahead.cpu() + 1
    return ranks


def _ranks_faiss(
    query_embeds: torch.Tensor,
    gallery_embeds: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    chunk_size: int,
    index_type: FaissIndexType,
    top_k: int,
    nprobe: int,
) -> torch.Tensor:
    num_queries, num_gallery = query_embeds.shape[0], gallery_embeds.shape[0]
    offsets = _row_offsets(rows, num_queries)
    # With P positives in a list of k + P_max items, a full list whose last score still ties the best
    # positive holds at least k non-positive items tying or beating it: the rank is then known to exceed k.
    max_positives = max(b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True))
    search_k = min(top_k + max_positives, num_gallery)
    index = build_faiss_index(gallery_embeds, index_type, nprobe)
    if index_type == "hnsw":
        index.hnsw.efSearch = max(search_k, 64)
    queries, gallery = _to_faiss(query_embeds), _to_faiss(gallery_embeds)
    tie_scale = TIE_RTOL * float(np.linalg.norm(gallery, axis=1).max())  # as in `_ranks_torch`
    censored = min(top_k + 1, num_gallery)
    rows, cols = rows.numpy(), cols.numpy()
    # Each (query, positive) pair as one sorted int64 key for vectorised membership tests.
    positive_keys = np.sort(rows * num_gallery + cols)
    ranks = np.empty(num_queries, dtype=np.int64)
    for start in range(0, num_queries, chunk_size):
        end = min(start + chunk_size, num_queries)
        scores, ids = index.search(queries[start:end], search_k)  # (c, k'), ids == -1 where fewer results
        keys = np.arange(start, end)[:, None] * num_gallery + ids
        slots = np.minimum(np.searchsorted(positive_keys, keys), len(positive_keys) - 1)
        valid = ids >= 0
        is_positive = valid & (positive_keys[slots] == keys)  # (c, k')
        found = is_positive.any(axis=1)
        # A positive missing from the list (below or tied with its last score, or missed by an approximate
        # index) is scored directly.
        lo, hi = offsets[start], offsets[end]
        own = np.full(end - start, -np.inf, dtype=np.float32)
        np.maximum.at(
            own, rows[lo:hi] - start, np.einsum("pd,pd->p", queries[rows[lo:hi]], gallery[cols[lo:hi]])
        )
        # A listed positive's score comes from the same kernel as the other listed scores.
        best = np.where(found, np.where(is_positive, scores, -np.inf).max(axis=1), own)  # (c,)
        threshold = best - tie_scale * np.linalg.norm(queries[start:end], axis=1)
        ahead = (valid & ~is_positive & (scores >= threshold[:, None])).sum(axis=1)
        full = valid[:, -1]
        # Every item tying or beating the best positive is listed when the whole gallery is, or when the
        # list's last score is below the tie threshold; a short list (approximate index) is all there is.
        known = np.where(full, (search_k == num_gallery) | (scores[:, -1] < threshold), found)
        ranks[start:end] = np.where(known, np.minimum(ahead + 1, top_k + 1), censored)
    return torch.from_numpy(ranks)


def _row_offsets(rows: torch.Tensor, num_queries: int) -> list[int]:
    """Start of each query's pairs in the row-sorted pair list, plus the end: ``N_q + 1`` offsets."""
    return [0, *torch.bincount(rows, minlength=num_queries).cumsum(0).tolist()]


def _score_inputs(
    query_embeds: torch.Tensor, gallery_embeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and gallery on the query's device, scored in float64 if given, else float32."""
    dtype = torch.float64 if query_embeds.dtype == torch.float64 else torch.float32
    return query_embeds.to(dtype), gallery_embeds.to(device=query_embeds.device, dtype=dtype)


def _to_faiss(embeds: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(embeds.detach().to(device="cpu", dtype=torch.float32).numpy())


def _positive_count_histogram(
    num_gallery: int, num_positives_per_query: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    counts = np.atleast_1d(np.asarray(num_positives_per_query))
    if counts.size == 0 or counts.min() < 1 or counts.max() > num_gallery:
        raise ValueError(
            f"num_positives_per_query must be between 1 and num_gallery={num_gallery} for every query, got "
            f"values in [{counts.min() if counts.size else None}, {counts.max() if counts.size else None}]."
        )
    return np.unique(counts, return_counts=True)


def _miss_probability(num_gallery: int, num_positives: int, k: int) -> float:
    """``C(N - p, k) / C(N, k)``, the chance that none of ``p`` positives lands in a random top ``k``."""
    if k > num_gallery - num_positives:
        return 0.0
    i = np.arange(k, dtype=np.float64)
    return float(np.prod((num_gallery - num_positives - i) / (num_gallery - i)))


def _as_id_list(ids: Sequence[Hashable]) -> list[Hashable]:
    return ids.tolist() if isinstance(ids, torch.Tensor | np.ndarray) else list(ids)
