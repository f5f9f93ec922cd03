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
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import time
from concurrent.futures import ProcessPoolExecutor

import faiss
import numpy as np
import torch

from recipes.evaluation.ranking import TIE_RTOL, build_faiss_index, rank_of_positives, search_topk


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
    args = parser.parse_args()
    set_threads(args.threads)

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
