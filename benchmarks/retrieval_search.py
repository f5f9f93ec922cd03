"""Exact top-k search and rank scoring on random embeddings: chunked torch vs FAISS, and peak memory.

    python benchmarks/retrieval_search.py --sizes 100000 1000000 --queries 1000 --threads 2

Part 1 times exact top-k search of ``--queries`` random L2-normalised float32 queries over galleries of each
``--sizes`` items with `recipes.evaluation.ranking.search_topk` (chunked torch matrix products) and with a FAISS
``IndexFlatIP`` in the same process, and checks that both return the same ids.

Part 2 compares the peak memory of `recipes.evaluation.ranking.rank_of_positives` (``--memory-chunk-size`` queries
per score block) with a naive computation of the full ``N_q x N_g`` score matrix. Each computation runs in a
fresh process that builds the inputs, warms up, resets the kernel's resident-memory high-water mark
(``/proc/self/clear_refs``) and reports how far the call raised it (``VmHWM`` minus the resident size before
the call). The high-water mark counts every page the call touches, whichever allocator owns it; tracemalloc
does not see torch's allocations, and ``ru_maxrss`` cannot be reset and, in a spawned child, starts at the
parent's resident size. Linux only.

Part 3, ``--scale N [N ...]`` (parts 1 and 2 are then skipped), measures search at scale on the index types of
`recipes.evaluation.index` (what `recipes/build_index.py` builds), for each gallery size N::

    python benchmarks/retrieval_search.py --scale 1000000 10000000 --threads 2

It writes N synthetic 512-d float32 L2-normalised embeddings to a memory-mapped ``.npy`` under ``--workdir``
(default ``outputs/bench_search``, deleted at the end unless ``--keep``), generated ``--chunk-rows`` rows at a time,
never the whole array in RAM. The data is **clustered**: a mixture of ``--clusters`` Gaussian clusters on the
sphere with log-normal weights. Centres are unit vectors of a random ``--centre-rank``-dimensional subspace (graded
similarities between clusters); an item is its centre plus a Gaussian offset of norm ``--cluster-spread`` in its
cluster's own ``--cluster-rank``-dimensional subspace plus isotropic noise of norm ``--item-noise``, renormalised
(defaults: cosine ~0.8 to its centre, ~0.7 between items of a cluster, 0 +- 0.1 between random items, like the
neighbourhoods of real embeddings). ``--queries`` queries are noisy copies of random gallery items (isotropic noise
of norm ``--query-noise``). Uniform random unit vectors would be a pathological worst case for ANN: in 512-d every
pair is almost equally far apart, so the true top 10 is decided by noise and no index structure finds it without
scanning nearly everything; isotropic clusters (offsets in all 512 dimensions) have the same problem inside each
cluster, and clusters with orthogonal centres are islands that an HNSW graph cannot route between. The ground truth is the exact top ``--k`` by chunked brute force over the memmap (a FAISS
``IndexFlatIP`` per chunk of rows, merging the top-k lists); its search time, excluding the reads, is exact search.

Then per size and index: build seconds (from the memmap, reads included), index memory (its serialized bytes),
recall@k against exact, queries/s for one batch of all queries on ``--threads`` threads, and that QPS over exact
search's QPS measured in the same process. Exact is an ``IndexFlatIP`` in RAM when the vectors fit in
``--flat-max-gib``, otherwise the chunked brute force's compute time. HNSW is built up to ``--hnsw-up-to`` vectors
(its build is the slowest); IVF-PQ (``--pq-m`` bytes a vector, nlist the power of two nearest 4 sqrt(N), at most
``--max-nlist``, trained on ``--train-per-list`` x nlist rows for ``--kmeans-iterations``) is searched with each
``--nprobe`` and, with ``--rerank``, re-scores its top candidates exactly from the memmap. Last, a projection to
``--project`` vectors (100M) from the largest size measured, with its assumptions printed.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.evaluation.index import (  # noqa: E402
    EmbeddingMatrix,
    IndexOptions,
    apply_search_parameters,
    build_index,
    default_nlist,
    rerank_exact,
)
from recipes.evaluation.ranking import TIE_RTOL, build_faiss_index, rank_of_positives, search_topk  # noqa: E402


def random_embeddings(num: int, dim: int, seed: int) -> torch.Tensor:
    """``(num, dim)`` float32 rows uniform on the unit sphere, built in place (no transient copies)."""
    embeds = torch.randn(num, dim, generator=torch.Generator().manual_seed(seed))
    return embeds.div_(embeds.norm(dim=1, keepdim=True))


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def bench_search(args: argparse.Namespace) -> list[dict]:
    queries = random_embeddings(args.queries, args.dim, seed=0)
    rows = []
    for size in args.sizes:
        gallery = random_embeddings(size, args.dim, seed=size)
        # Warm up both thread pools and BLAS on a few queries.
        search_topk(queries[:8], gallery, args.k, chunk_size=args.chunk_size)
        build_faiss_index(gallery[:1000]).search(queries[:8].numpy(), args.k)

        torch_s, add_s, search_s = [], [], []
        for _ in range(args.repeats):  # interleaved, so both see the same background load
            (torch_scores, torch_ids), seconds = timed(search_topk, queries, gallery, args.k, args.chunk_size)
            torch_s.append(seconds)
            index, seconds = timed(build_faiss_index, gallery)
            add_s.append(seconds)
            (faiss_scores, faiss_ids), seconds = timed(index.search, queries.numpy(), args.k)
            search_s.append(seconds)
            del index
        same_order = float(np.mean(np.all(torch_ids.numpy() == faiss_ids, axis=1)))
        overlap = np.mean([len(np.intersect1d(a, b)) / args.k for a, b in zip(torch_ids.numpy(), faiss_ids)])
        if overlap < 1.0:  # exact search on both sides: any disagreement voids the timing comparison
            raise SystemExit(
                f"torch and FAISS exact top-{args.k} disagree at {size:,} items (overlap {overlap:.2%})."
            )
        rows.append(
            {
                "gallery": size,
                "torch_s": min(torch_s),
                "faiss_add_s": min(add_s),
                "faiss_search_s": min(search_s),
                "ratio": min(torch_s) / min(search_s),
                "same_order": same_order,
                "overlap": float(overlap),
                "max_score_diff": float(np.abs(torch_scores.numpy() - faiss_scores).max()),
            }
        )
        del gallery
    return rows


def _status_mib(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in MiB."""
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1)) / 1024


def _memory_child(mode: str, args: argparse.Namespace) -> dict:
    set_threads(args.threads)
    queries = random_embeddings(args.memory_queries, args.dim, seed=1)
    gallery = random_embeddings(args.memory_gallery, args.dim, seed=2)
    positives = torch.randint(
        0, args.memory_gallery, (args.memory_queries,), generator=torch.Generator().manual_seed(3)
    )
    rank_of_positives(queries[:64], gallery[:1000], positives[:64] % 1000)  # warm-up
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset VmHWM to the current resident size
    resident_mib = _status_mib("VmRSS")
    start = time.perf_counter()
    if mode == "naive":
        # The same rule as rank_of_positives (ties ranked pessimistically, within the same relative tolerance),
        # counted in place, so only the size of the score matrix differs.
        sims = queries @ gallery.T  # (N_q, N_g)
        best = sims.gather(1, positives[:, None])  # (N_q, 1)
        threshold = best - TIE_RTOL * gallery.norm(dim=1).max() * queries.norm(dim=1, keepdim=True)
        sims.scatter_(1, positives[:, None], -torch.inf)  # a query's own positive never counts against it
        ranks = sims.ge_(threshold).sum(1).long() + 1
    else:
        ranks = rank_of_positives(
            queries, gallery, positives, chunk_size=args.memory_chunk_size, faiss_above=None
        )
    seconds = time.perf_counter() - start
    peak_mib = _status_mib("VmHWM") - resident_mib
    return {"mode": mode, "seconds": seconds, "peak_mib": peak_mib, "ranks": ranks.numpy()}


def bench_memory(args: argparse.Namespace) -> list[dict]:
    rows = []
    for mode in ("naive", "chunked"):
        # A fresh process per measurement; one killed for lack of memory raises BrokenProcessPool.
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(_memory_child, mode, args).result())
    return rows


# ------------------------------------------------------------------------------------------- part 3: at scale
def cluster_model(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mixture of part 3: ``(C, D)`` unit centres drawn from a random ``--centre-rank``-dimensional subspace (so
    clusters have graded similarities, not ``C`` orthogonal islands), their log-normal weights, and per cluster a
    ``(--cluster-rank, D)`` Gaussian basis scaled so that an item's offset in it has norm ``--cluster-spread``."""
    rng = np.random.default_rng([args.seed, 0])
    subspace = rng.standard_normal((args.centre_rank, args.dim), dtype=np.float32)
    centres = rng.standard_normal((args.clusters, args.centre_rank), dtype=np.float32) @ subspace
    faiss.normalize_L2(centres)
    weights = rng.lognormal(0.0, 1.0, args.clusters)
    bases = rng.standard_normal((args.clusters, args.cluster_rank, args.dim), dtype=np.float32)
    bases *= np.float32(args.cluster_spread / math.sqrt(args.cluster_rank * args.dim))
    return centres, weights / weights.sum(), bases


def gallery_chunk(args: argparse.Namespace, model: tuple, chunk: int, rows: int) -> np.ndarray:
    """Chunk `chunk` of the gallery, ``(rows, dim)``, from its own seeded generator: an item is its cluster's
    centre, plus a Gaussian offset in the cluster's own low-rank subspace, plus isotropic noise of norm
    ``--item-noise``, renormalised."""
    centres, weights, bases = model
    rng = np.random.default_rng([args.seed, 1, chunk])
    assign = rng.choice(args.clusters, size=rows, p=weights)
    block = rng.standard_normal((rows, args.dim), dtype=np.float32)
    block *= np.float32(args.item_noise / math.sqrt(args.dim))
    block += centres[assign]
    order = np.argsort(assign, kind="stable")
    for members in np.split(order, np.flatnonzero(np.diff(assign[order])) + 1):
        offsets = rng.standard_normal((len(members), args.cluster_rank), dtype=np.float32)
        block[members] += offsets @ bases[assign[members[0]]]
    faiss.normalize_L2(block)
    return block


def clustered_gallery(path: Path, args: argparse.Namespace, num: int) -> tuple[np.ndarray, bool]:
    """The ``(num, dim)`` clustered gallery at `path`, memory-mapped read-only, and whether it was written now.

    It is written ``--chunk-rows`` rows at a time, never whole in RAM. With ``--reuse``, a gallery left there by
    ``--keep`` is read instead when it has the shape and its first and last chunks are what these settings draw.
    """
    model = cluster_model(args)
    chunks = [
        (chunk, start, min(args.chunk_rows, num - start))
        for chunk, start in enumerate(range(0, num, args.chunk_rows))
    ]
    if args.reuse and path.exists():
        gallery = np.load(path, mmap_mode="r")
        if gallery.shape == (num, args.dim) and all(
            np.array_equal(gallery[start : start + rows], gallery_chunk(args, model, chunk, rows))
            for chunk, start, rows in (chunks[0], chunks[-1])
        ):
            return gallery, False
        print(f"{path} was drawn with other settings: writing it again", flush=True)
        del gallery
    gallery = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(num, args.dim))
    for chunk, start, rows in chunks:
        gallery[start : start + rows] = gallery_chunk(args, model, chunk, rows)
    gallery.flush()
    del gallery
    return np.load(path, mmap_mode="r"), True


def noisy_queries(gallery: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """``--queries`` unit vectors: random gallery items plus isotropic noise of norm ``--query-noise``; and the
    gallery rows they were made from."""
    rng = np.random.default_rng([args.seed, 2])
    rows = np.sort(rng.choice(len(gallery), size=args.queries, replace=False))
    queries = np.array(gallery[rows], dtype=np.float32)
    queries += np.float32(args.query_noise / math.sqrt(args.dim)) * rng.standard_normal(
        queries.shape, dtype=np.float32
    )
    faiss.normalize_L2(queries)
    return queries, rows


def exact_topk_chunked(
    gallery: np.ndarray, queries: np.ndarray, k: int, chunk_rows: int
) -> tuple[np.ndarray, float, float]:
    """Exact top-`k` ids over a memory-mapped gallery: an ``IndexFlatIP`` per chunk of rows, the running top-k
    lists merged. Returns ``(ids, search seconds, wall seconds)``; search seconds count only `index.search`, not
    reading the chunks or copying them into the index."""
    started = time.perf_counter()
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    search_s = 0.0
    for start in range(0, len(gallery), chunk_rows):
        index = faiss.IndexFlatIP(gallery.shape[1])
        index.add(np.ascontiguousarray(gallery[start : start + chunk_rows], dtype=np.float32))
        tic = time.perf_counter()
        scores, ids = index.search(queries, min(k, index.ntotal))
        search_s += time.perf_counter() - tic
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, ids + start], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        del index
    return best_ids, search_s, time.perf_counter() - started


def recall_at_k(ids: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k found in its returned top-k."""
    return float(
        np.mean([len(np.intersect1d(a, b)) / truth.shape[1] for a, b in zip(ids, truth, strict=True)])
    )


def item_found(ids: np.ndarray, sources: np.ndarray) -> float:
    """Fraction of queries whose source item (the gallery row the query is a noisy copy of) was returned."""
    return float(np.mean(np.any(ids == sources[:, None], axis=1)))


def timed_search(index, queries: np.ndarray, k: int, repeats: int) -> tuple[np.ndarray, float]:
    """Ids and seconds (the fastest of `repeats`) of one search of all `queries`, after a warm-up search of 8."""
    index.search(queries[:8], k)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        _, ids = index.search(queries, k)
        best = min(best, time.perf_counter() - start)
    return ids, best


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB" if num_bytes >= 2**28 else f"{num_bytes / 2**20:.1f} MiB"


def bench_scale_size(args: argparse.Namespace, num: int) -> dict:
    """Every index of part 3 on one gallery size: rows of the table and the figures the projection needs."""
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"gallery-{num}x{args.dim}.npy"
    need = num * args.dim * 4
    free = shutil.disk_usage(workdir).free + (path.stat().st_size if path.exists() else 0)
    if need > free - 2**30:
        raise SystemExit(
            f"{num:,} x {args.dim} float32 needs {_gib(need)} in {workdir}, which has {_gib(free)} free."
        )
    try:
        return _bench_scale_size(args, num, path)
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)


def _bench_scale_size(args: argparse.Namespace, num: int, path: Path) -> dict:
    need = num * args.dim * 4
    started = time.perf_counter()
    gallery, written = clustered_gallery(path, args, num)
    generate_s = time.perf_counter() - started
    action = "wrote" if written else "reused"
    print(
        f"\n[{num:,}] {action} {path} ({_gib(need)}, {args.clusters} clusters) in {generate_s:.0f} s",
        flush=True,
    )
    queries, sources = noisy_queries(gallery, args)
    truth, chunked_search_s, chunked_wall_s = exact_topk_chunked(gallery, queries, args.k, args.chunk_rows)
    print(
        f"[{num:,}] exact top-{args.k} by chunked brute force: {chunked_search_s:.1f} s of search, "
        f"{chunked_wall_s:.1f} s with the reads",
        flush=True,
    )
    # Exact search's time is measured again right before each index's: an in-RAM IndexFlatIP over the first
    # --reference-rows rows, scaled by N / rows (exact search is linear in N). The machine is shared, so the
    # ratios compare timings taken under the same load.
    reference = faiss.IndexFlatIP(args.dim)
    reference.add(np.ascontiguousarray(gallery[: min(num, args.reference_rows)], dtype=np.float32))
    reference_s: list[float] = []

    def exact_now() -> float:
        _, seconds = timed_search(reference, queries, args.k, args.search_repeats)
        reference_s.append(seconds * num / reference.ntotal)
        return reference_s[-1]

    matrix = EmbeddingMatrix([gallery])
    rows: list[dict] = []

    def add_row(
        index: str,
        parameters: str,
        build_s: float | None,
        memory: int,
        ids: np.ndarray,
        seconds: float,
        exact_s: float,
    ):
        rows.append(
            {
                "index": index,
                "parameters": parameters,
                "build_s": build_s,
                "memory_bytes": memory,
                "recall": recall_at_k(ids, truth),
                "item": item_found(ids, sources),
                "search_s": seconds,
                "qps": args.queries / seconds,
                "speedup": exact_s / seconds,
            }
        )

    if need <= args.flat_max_gib * 2**30:
        index, config = build_index(matrix, IndexOptions(index_type="flat"), progress=False)
        exact_s = exact_now()
        ids, seconds = timed_search(index, queries, args.k, args.search_repeats)
        del index
        add_row(
            "exact (IndexFlatIP in RAM)",
            "-",
            config["build_seconds"],
            config["memory_bytes"],
            ids,
            seconds,
            exact_s,
        )
    else:
        parameters = f"{args.chunk_rows:,} rows a chunk, reads not timed"
        add_row(
            "exact (chunked from the memmap)", parameters, None, need, truth, chunked_search_s, exact_now()
        )
    print(f"[{num:,}] {rows[0]['index']}: {rows[0]['search_s']:.2f} s for {args.queries} queries", flush=True)

    if num <= args.hnsw_up_to:
        options = IndexOptions(index_type="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
        index, config = build_index(matrix, options, progress=False)
        print(f"[{num:,}] HNSW M={args.hnsw_m} built in {config['build_seconds']:.0f} s", flush=True)
        for ef in args.ef_search:
            apply_search_parameters(index, {"ef_search": ef})
            exact_s = exact_now()
            ids, seconds = timed_search(index, queries, args.k, args.search_repeats)
            parameters = f"M={args.hnsw_m}, efC={args.ef_construction}, ef={ef}"
            add_row(
                "HNSW", parameters, config["build_seconds"], config["memory_bytes"], ids, seconds, exact_s
            )
        del index

    nlist = min(default_nlist(num), args.max_nlist)
    options = IndexOptions(
        index_type="ivfpq",
        nlist=nlist,
        pq_m=args.pq_m,
        train_size=args.train_per_list * nlist,
        kmeans_iterations=args.kmeans_iterations,
        coarse_quantizer=args.coarse_quantizer,
        seed=args.seed,
    )
    index, config = build_index(matrix, options, progress=False)
    build = config["build"]
    print(
        f"[{num:,}] IVF-PQ nlist={nlist} built in {config['build_seconds']:.0f} s (train "
        f"{config['train_seconds']:.0f} s, add {config['add_seconds']:.0f} s)",
        flush=True,
    )
    ivfpq = {
        **build,
        "train_s": config["train_seconds"],
        "add_s": config["add_seconds"],
        "memory_bytes": config["memory_bytes"],
        "search_s": {},
    }
    label = f"nlist={nlist}, PQ{args.pq_m}x8, {build['coarse_quantizer']} quantizer"
    for nprobe in args.nprobe:
        apply_search_parameters(index, {"nprobe": nprobe, "quantizer_ef_search": max(64, 2 * nprobe)})
        exact_s = exact_now()
        ids, seconds = timed_search(index, queries, args.k, args.search_repeats)
        ivfpq["search_s"][nprobe] = seconds
        add_row(
            "IVF-PQ",
            f"{label}, nprobe={nprobe}",
            config["build_seconds"],
            config["memory_bytes"],
            ids,
            seconds,
            exact_s,
        )
        if args.rerank and nprobe in args.rerank_nprobe:
            exact_s = exact_now()
            start = time.perf_counter()
            _, candidates = index.search(queries, args.rerank)
            _, ids = rerank_exact(queries, candidates, matrix, args.k)
            seconds = time.perf_counter() - start
            parameters = f"nprobe={nprobe}, top {args.rerank} re-scored from the memmap"
            add_row(
                "IVF-PQ + exact re-rank",
                parameters,
                config["build_seconds"],
                config["memory_bytes"],
                ids,
                seconds,
                exact_s,
            )
    del index, matrix, gallery
    reference.reset()  # frees its vectors
    print(
        f"[{num:,}] exact search estimated from the reference rows: {min(reference_s):.1f} to "
        f"{max(reference_s):.1f} s over the run",
        flush=True,
    )
    return {
        "num": num,
        "rows": rows,
        "exact_search_s": min(reference_s),
        "ivfpq": ivfpq,
        "generate_s": generate_s,
    }


def print_scale_table(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\n### Search at scale: {args.dim}-d clustered synthetic embeddings, {args.queries} queries, "
          f"top {args.k}, {args.threads} threads\n")  # fmt: skip
    print(
        f"| N | index | parameters | build s | memory | recall@{args.k} | item@{args.k} | QPS | QPS / exact |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        for row in result["rows"]:
            build = "-" if row["build_s"] is None else f"{row['build_s']:.0f}"
            print(f"| {result['num']:,} | {row['index']} | {row['parameters']} | {build} | "
                  f"{_gib(row['memory_bytes'])} | {row['recall']:.3f} | {row['item']:.3f} | {row['qps']:,.0f} | {row['speedup']:.1f}x |")  # fmt: skip


def print_projection(result: dict, args: argparse.Namespace) -> None:
    """Extrapolate the largest measured size to ``--project`` vectors (see the printed assumptions)."""
    num, target, dim = result["num"], args.project, args.dim
    ivf = result["ivfpq"]
    nlist, target_nlist = ivf["nlist"], default_nlist(target)
    fixed = nlist * dim * 4 + 2**8 * dim * 4  # coarse centroids + PQ centroids (256 per sub-quantizer)
    per_vector = (ivf["memory_bytes"] - fixed) / num  # PQ code + id (+ list overhead)
    target_fixed = target_nlist * dim * 4 + 2**8 * dim * 4
    ratio = target / num
    scan = (target / target_nlist) / (num / nlist)  # codes scanned per probed list, relative
    exact_s = result["exact_search_s"] * ratio
    print(f"\n### Projection to {target:,} vectors (from {num:,})\n")
    print("| | exact flat | IVF-PQ |")
    print("|---|---:|---:|")
    print(f"| memory | {_gib(target * dim * 4)} (N x D x 4) | {_gib(per_vector * target + target_fixed)} "
          f"({per_vector:.1f} B a vector + centroids of {target_nlist} lists) |")  # fmt: skip
    for nprobe, seconds in ivf["search_s"].items():
        projected = seconds * scan
        print(f"| {args.queries} queries, nprobe={nprobe} | {exact_s:,.0f} s ({args.queries / exact_s:,.1f} QPS) | "
              f"{projected:.2f} s ({args.queries / projected:,.0f} QPS) |")  # fmt: skip
    train_s = ivf["train_s"] * (target_nlist / nlist) ** 2
    flat_add_s = ivf["add_s"] * ratio * (target_nlist / nlist if ivf["coarse_quantizer"] == "flat" else 1.0)
    linear_add_s = ivf["add_s"] * ratio
    print(f"| build | copying {_gib(target * dim * 4)} into RAM | train {train_s / 60:,.0f} min + add "
          f"{flat_add_s / 3600:,.1f} h (flat quantizer; >= {linear_add_s / 3600:,.1f} h with an HNSW one) on "
          f"{args.threads} threads |")  # fmt: skip
    print(
        f"\nAssumptions: memory is linear in N (flat: N x D x 4 bytes; IVF-PQ: the measured bytes per vector, "
        f"{per_vector:.1f}, plus {target_nlist} x D x 4 bytes of centroids with nlist = the power of two nearest "
        f"4 sqrt(N)). Exact search time is linear in N ({result['exact_search_s']:.1f} s at {num:,}, the fastest of "
        "the reference timings). "
        f"IVF-PQ search time scales with the codes scanned, nprobe x N / nlist, i.e. x{scan:.2f} "
        f"({target / target_nlist:,.0f} vs {num / nlist:,.0f} vectors a list); the coarse quantizer's cost and "
        f"cache effects are ignored. Training time (k-means, plus the product quantizer's, which does not grow) "
        f"is scaled by train rows x nlist = {args.train_per_list} x nlist squared, x{(target_nlist / nlist) ** 2:.0f}"
        f" (an upper bound). Adding scales with N x nlist for a flat coarse quantizer (one matrix product per "
        f"block, x{ratio * target_nlist / nlist:.0f}); with an HNSW quantizer (what index_type auto picks above "
        f"16k lists) it grows with N only, x{ratio:.0f} of the measured add time at best. Recall is not projected: "
        "at a fixed nprobe it drops as lists grow, and nprobe must then grow with it."
    )


def bench_scale(args: argparse.Namespace) -> None:
    print(
        f"faiss {faiss.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    workdir = Path(args.workdir)
    created = not workdir.exists()
    results = []
    try:
        for num in args.scale:
            results.append(bench_scale_size(args, num))
            print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        if created and not args.keep and workdir.is_dir() and not any(workdir.iterdir()):
            workdir.rmdir()  # the galleries are deleted as soon as measured
    print_scale_table(results, args)
    print(
        f"\nrecall@{args.k}: the fraction of each query's exact top {args.k} that the index returns. item@{args.k}: "
        f"the fraction of queries whose source item (the gallery row the query is a noisy copy of) is in the "
        f"returned top {args.k}. QPS: {args.queries} queries searched in one batch (the fastest of "
        f"{args.search_repeats}). QPS / exact: exact search's time, measured right before the row's on an in-RAM flat "
        f"index of the first {args.reference_rows:,} rows and scaled by N / rows, over the row's time (the exact "
        f"row's own ratio checks that scaling). Above --flat-max-gib the exact row is the chunked brute force's "
        f"search time, without reading the chunks from disk."
    )
    print_projection(results[-1], args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="gallery sizes")
    parser.add_argument("--queries", type=int, default=1000, help="queries per search")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch and FAISS threads"
    )
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--chunk-size", type=int, default=1024, help="queries per torch score block in search"
    )
    parser.add_argument("--memory-queries", type=int, default=20_000)
    parser.add_argument("--memory-gallery", type=int, default=100_000)
    parser.add_argument("--memory-chunk-size", type=int, default=4096)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per search; the fastest is reported"
    )
    parser.add_argument("--skip-memory", action="store_true", help="only run the search timings")
    scale = parser.add_argument_group("part 3: search at scale (--scale)")
    scale.add_argument("--scale", type=int, nargs="+", help="gallery sizes; runs part 3 only")
    scale.add_argument(
        "--workdir", default="outputs/bench_search", help="where the memory-mapped galleries go"
    )
    scale.add_argument(
        "--keep", action="store_true", help="keep the galleries (deleted after each size otherwise)"
    )
    scale.add_argument(
        "--clusters", type=int, default=4000, help="Gaussian clusters of the synthetic gallery"
    )
    scale.add_argument("--centre-rank", type=int, default=64, help="dimension of the centres' subspace")
    scale.add_argument(
        "--cluster-rank", type=int, default=16, help="dimension of each cluster's own subspace"
    )
    scale.add_argument("--cluster-spread", type=float, default=0.7, help="norm of an item's offset in it")
    scale.add_argument("--item-noise", type=float, default=0.2, help="norm of an item's isotropic noise")
    scale.add_argument(
        "--query-noise", type=float, default=0.5, help="norm of a query's offset from its item"
    )
    scale.add_argument(
        "--chunk-rows", type=int, default=262_144, help="rows generated / brute-forced at a time"
    )
    scale.add_argument("--seed", type=int, default=0)
    scale.add_argument(
        "--flat-max-gib", type=float, default=4.0, help="build an in-RAM flat index up to this size"
    )
    scale.add_argument(
        "--hnsw-up-to", type=int, default=1_000_000, help="build HNSW for galleries up to this size"
    )
    scale.add_argument("--hnsw-m", type=int, default=32)
    scale.add_argument("--ef-construction", type=int, default=40)
    scale.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128])
    scale.add_argument("--max-nlist", type=int, default=8192, help="cap on nlist (4 sqrt(N) rounded to 2^k)")
    scale.add_argument("--pq-m", type=int, default=64, help="PQ sub-quantizers (bytes a vector)")
    scale.add_argument("--train-per-list", type=int, default=40, help="IVF-PQ training rows per list")
    scale.add_argument("--kmeans-iterations", type=int, default=10)
    scale.add_argument("--coarse-quantizer", choices=["auto", "flat", "hnsw"], default="flat")
    scale.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    scale.add_argument("--rerank", type=int, default=100, help="candidates re-scored exactly (0: none)")
    scale.add_argument(
        "--rerank-nprobe", type=int, nargs="+", default=[16, 64], help="nprobe values re-ranked"
    )
    scale.add_argument(
        "--search-repeats", type=int, default=2, help="timed searches per index; the fastest counts"
    )
    scale.add_argument(
        "--reference-rows",
        type=int,
        default=262_144,
        help="rows of the in-RAM flat index timed before each index",
    )
    scale.add_argument(
        "--reuse", action="store_true", help="reuse a gallery kept by --keep (checked, see above)"
    )
    scale.add_argument("--project", type=int, default=100_000_000, help="size the figures are projected to")
    args = parser.parse_args()
    set_threads(args.threads)
    if args.scale:
        bench_scale(args)
        return

    print(f"torch {torch.__version__}, faiss {faiss.__version__}, {args.threads} threads")
    print(
        f"\nExact top-{args.k} search of {args.queries:,} queries (D={args.dim}): seconds, fastest of "
        f"{args.repeats}; FAISS add = copying the gallery into IndexFlatIP"
    )
    header = (
        f"{'gallery':>10} {'torch chunked':>14} {'FAISS add':>10} {'FAISS search':>13} {'torch/FAISS':>12} "
        f"{'same top-k':>11} {'id overlap':>11} {'max |dscore|':>13}"
    )
    print(header + "\n" + "-" * len(header))
    for row in bench_search(args):
        print(
            f"{row['gallery']:>10,} {row['torch_s']:>14.3f} {row['faiss_add_s']:>10.3f} "
            f"{row['faiss_search_s']:>13.3f} {row['ratio']:>11.2f}x {row['same_order']:>11.1%} "
            f"{row['overlap']:>11.1%} {row['max_score_diff']:>13.1e}"
        )

    if args.skip_memory:
        return
    block_gib = args.memory_chunk_size * args.memory_gallery * 4 / 2**30
    full_gib = args.memory_queries * args.memory_gallery * 4 / 2**30
    print(
        f"\nrank_of_positives peak memory, {args.memory_queries:,} queries x {args.memory_gallery:,} gallery "
        f"(peak resident growth over the call, fresh process each)"
    )
    header = f"{'method':>32} {'score block':>12} {'peak extra':>11} {'seconds':>8}"
    print(header + "\n" + "-" * len(header))
    naive, chunked = bench_memory(args)
    for row, label, gib in (
        (naive, "naive full matrix", full_gib),
        (chunked, f"chunked (chunk_size={args.memory_chunk_size})", block_gib),
    ):
        print(f"{label:>32} {gib:>8.2f} GiB {row['peak_mib'] / 1024:>7.2f} GiB {row['seconds']:>8.2f}")
    identical = np.array_equal(naive["ranks"], chunked["ranks"])
    print(f"ranks identical: {identical}")
    if not identical:
        differ = int((naive["ranks"] != chunked["ranks"]).sum())
        raise SystemExit(
            f"The chunked ranks differ from the full matrix's for {differ} queries: the comparison is void."
        )


if __name__ == "__main__":
    main()
