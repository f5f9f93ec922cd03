"""The FAISS index factory of `recipes.evaluation.index`: the size-based choice, the recall of HNSW and IVF-PQ
against exact search on clustered synthetic data, and the save/load round trip."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from recipes.evaluation.index import (
    BuiltIndex,
    EmbeddingMatrix,
    IndexOptions,
    build_index,
    choose_index_type,
    default_nlist,
    load_index,
    rerank_exact,
    resolve_index_parameters,
    save_index,
)

NUM, DIM, CLUSTERS, QUERIES, K = 20_000, 64, 200, 500, 10


def clustered(num: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """``(num, dim)`` unit vectors: random unit centres plus isotropic noise of the same norm, renormalised (an
    item's cosine to its centre is about 0.7), so nearest neighbours are meaningful."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((num, dim), dtype=np.float32) / np.sqrt(dim)
    x = centres[rng.integers(0, clusters, num)] + noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> dict:
    """20k clustered gallery vectors (in two parts, like shards), 500 noisy copies of gallery items as queries and
    their exact top 10. FAISS runs on one thread: HNSW insertion order, hence the graph, is then deterministic."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    gallery = clustered(NUM, DIM, CLUSTERS, seed=0)
    rng = np.random.default_rng(1)
    queries = gallery[rng.choice(NUM, QUERIES, replace=False)]
    queries = queries + 0.5 / np.sqrt(DIM) * rng.standard_normal(queries.shape, dtype=np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(gallery)
    _, truth = exact.search(queries, K)
    yield {
        "gallery": gallery,
        "queries": queries,
        "truth": truth,
        "matrix": EmbeddingMatrix([gallery[:7000], gallery[7000:]]),
    }
    faiss.omp_set_num_threads(before)


def recall_at_k(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(np.intersect1d(a, b)) / truth.shape[1] for a, b in zip(ids, truth, strict=True)])
    )


def test_auto_chooses_flat_then_hnsw_then_ivfpq_at_the_thresholds():
    assert [choose_index_type(n) for n in (1, 100_000, 100_001, 2_000_000, 2_000_001, 10**8)] == [
        "flat", "flat", "hnsw", "hnsw", "ivfpq", "ivfpq"
    ]  # fmt: skip
    assert [choose_index_type(n, flat_max=10, hnsw_max=20) for n in (10, 11, 20, 21)] == [
        "flat", "hnsw", "hnsw", "ivfpq"
    ]  # fmt: skip
    assert choose_index_type(5, flat_max=0, hnsw_max=0) == "ivfpq"
    with pytest.raises(ValueError, match="flat_max <= hnsw_max"):
        choose_index_type(5, flat_max=30, hnsw_max=20)


def test_the_resolved_ivfpq_parameters_follow_the_documented_defaults():
    assert default_nlist(1_000_000) == 4096  # 4 sqrt(N) = 4000
    assert default_nlist(10_000_000) == 16_384  # 12 649: log2 = 13.6
    assert default_nlist(20_000) == 512  # 566, and 512 x 39 <= 20 000
    assert default_nlist(1000) == 16  # 126 -> 128, halved until 39 rows per list: 16 x 39 = 624
    parameters = resolve_index_parameters(IndexOptions(), 3_000_000, 512)
    assert parameters["index_type"] == "ivfpq"
    assert parameters["build"] == {
        "nlist": 8192, "pq_m": 64, "pq_bits": 8, "train_size": 1_000_000, "kmeans_iterations": 20,
        "coarse_quantizer": "flat", "seed": 0,
    }  # fmt: skip
    assert parameters["search"] == {"nprobe": 16}
    huge = resolve_index_parameters(IndexOptions(nprobe=64), 100_000_000, 512)  # 4 sqrt(N) = 40 000
    assert huge["build"]["nlist"] == 32_768 and huge["build"]["coarse_quantizer"] == "hnsw"
    assert huge["search"] == {"nprobe": 64, "quantizer_ef_search": 128}
    small = resolve_index_parameters(IndexOptions(index_type="ivfpq", pq_m=8), 20_000, 64)
    assert small["build"]["nlist"] == 512 and small["build"]["train_size"] == 20_000
    assert small["build"]["coarse_quantizer"] == "flat" and small["search"] == {"nprobe": 16}
    assert resolve_index_parameters(IndexOptions(), 150_000, 512)["index_type"] == "hnsw"
    with pytest.raises(ValueError, match="pq_m=48 must divide the dimension 512"):
        resolve_index_parameters(IndexOptions(index_type="ivfpq", pq_m=48), 3_000_000, 512)
    with pytest.raises(ValueError, match="index_type must be auto"):
        resolve_index_parameters(IndexOptions(index_type="ivf"), 10, 4)


def test_auto_builds_an_exact_flat_index_for_a_small_gallery(data):
    index, config = build_index(data["matrix"], IndexOptions(flat_max=NUM), progress=False)
    assert config["index_type"] == "flat" and config["chosen_by"] == {"flat_max": NUM, "hnsw_max": 2_000_000}
    assert config["num_vectors"] == NUM and config["dim"] == DIM
    assert config["memory_bytes"] >= NUM * DIM * 4
    _, ids = index.search(data["queries"], K)
    assert recall_at_k(ids, data["truth"]) == 1.0


# Measured on this data (faiss-cpu 1.15.1, one thread): HNSW M=16 0.9642 (ef_search 16) and 0.9958 (64); IVF-PQ
# 512 lists x 8 bytes 0.5548 (nprobe 16), 0.4624 (nprobe 1), 0.9978 re-ranking the top 100 exactly. The tolerance
# covers other SIMD kernels and FAISS versions; a figure outside it means the index is not built or searched as
# configured (e.g. ef_search or nprobe not applied), not noise.
@pytest.mark.parametrize(
    ("options", "expected", "tolerance"),
    [
        (IndexOptions(index_type="hnsw", hnsw_m=16, ef_search=16), 0.9642, 0.02),
        (IndexOptions(index_type="hnsw", hnsw_m=16, ef_search=64), 0.9958, 0.004),
        (IndexOptions(index_type="ivfpq", pq_m=8, nprobe=16), 0.5548, 0.03),
        (IndexOptions(index_type="ivfpq", pq_m=8, nprobe=1), 0.4624, 0.03),
    ],
    ids=["hnsw-ef16", "hnsw-ef64", "ivfpq-nprobe16", "ivfpq-nprobe1"],
)
def test_approximate_indexes_reach_their_measured_recall_against_exact_search(
    data, options, expected, tolerance
):
    index, config = build_index(data["matrix"], options, progress=False)
    assert config["index_type"] == options.index_type and index.ntotal == NUM
    _, ids = index.search(data["queries"], K)
    assert recall_at_k(ids, data["truth"]) == pytest.approx(expected, abs=tolerance)
    if options.index_type == "ivfpq":
        # 8-byte codes instead of 256-byte vectors: the index is far smaller than the flat one.
        assert config["memory_bytes"] < NUM * DIM * 4 / 5
        if options.nprobe == 16:
            _, candidates = index.search(data["queries"], 100)
            _, reranked = rerank_exact(data["queries"], candidates, data["matrix"], K)
            assert recall_at_k(reranked, data["truth"]) == pytest.approx(0.9978, abs=0.005)


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfpq"])
def test_a_saved_index_loads_and_searches_identically(data, tmp_path, index_type):
    options = IndexOptions(index_type=index_type, hnsw_m=16, pq_m=8, nprobe=8, ef_search=32)
    index, config = build_index(data["matrix"], options, progress=False)
    ids = np.arange(NUM, dtype=np.int64) + 1000  # split positions, not FAISS's own ids
    save_index(tmp_path, index, ids, config)
    assert json.loads((tmp_path / "index_config.json").read_text()) == config
    # The index in memory, searched as a loaded one is (queries normalised the same way).
    scores, expected_ids = BuiltIndex(tmp_path, index, ids, config).search(data["queries"], K)
    loaded = load_index(tmp_path)
    assert loaded.config == config
    loaded_scores, loaded_ids = loaded.search(data["queries"], K)
    np.testing.assert_array_equal(loaded_ids, expected_ids)
    assert expected_ids.min() >= 1000
    np.testing.assert_array_equal(loaded_scores, scores)
    if index_type == "ivfpq":
        assert faiss.extract_index_ivf(loaded.index).nprobe == 8
        wider = load_index(tmp_path, nprobe=64)
        assert faiss.extract_index_ivf(wider.index).nprobe == 64 and wider.config["search"]["nprobe"] == 64
        with pytest.raises(ValueError, match="ef_search applies to an hnsw index"):
            load_index(tmp_path, ef_search=10)
    if index_type == "hnsw":
        assert faiss.downcast_index(loaded.index).hnsw.efSearch == 32


def test_queries_are_normalised_and_a_torch_tensor_works(data, tmp_path):
    import torch

    index, config = build_index(data["matrix"], IndexOptions(index_type="flat"), progress=False)
    save_index(tmp_path, index, np.arange(NUM), config)
    loaded = load_index(tmp_path)
    scores, ids = loaded.search(torch.from_numpy(3 * data["queries"][:20]), K)
    np.testing.assert_array_equal(ids, data["truth"][:20])
    assert np.all(scores <= 1 + 1e-5)
    with pytest.raises(ValueError, match=r"Queries must be \(N_q, 64\)"):
        loaded.search(data["queries"][:, :32], K)
    with pytest.raises(ValueError, match="k must be between 1 and the number of indexed items"):
        loaded.search(data["queries"], NUM + 1)


def test_embedding_matrix_reads_blocks_and_rows_across_parts(data):
    gallery, matrix = data["gallery"], data["matrix"]
    blocks = list(matrix.blocks(max_rows=4096))
    assert [start for start, _ in blocks] == [
        0,
        4096,
        7000,
        11_096,
        15_192,
        19_288,
    ]  # blocks never span parts
    np.testing.assert_array_equal(np.concatenate([block for _, block in blocks]), gallery)
    rows = np.array([19_999, 3, 7000, 6999, 3, 12_345])
    np.testing.assert_array_equal(matrix.take(rows), gallery[rows])
    with pytest.raises(IndexError, match=r"Row ids must be in \[0, 20000\)"):
        matrix.take(np.array([NUM]))


def test_rerank_over_every_row_is_exact_search(data):
    candidates = np.tile(np.arange(NUM), (20, 1))[:, ::-1]  # every row, in the worst order
    scores, ids = rerank_exact(data["queries"][:20], candidates, data["matrix"], K)
    np.testing.assert_array_equal(ids, data["truth"][:20])
    expected = np.take_along_axis(data["queries"][:20] @ data["gallery"].T, data["truth"][:20], axis=1)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
