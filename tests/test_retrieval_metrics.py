import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from recipes.evaluation.ranking import (
    RECALL_METRIC_PATH,
    chance_median_rank,
    chance_recall,
    positives_from_ids,
    rank_of_positives,
    retrieval_metrics,
    search_topk,
)


def _normalized(generator: torch.Generator, n: int, dim: int = 16) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)


def _grid_embeddings(generator: torch.Generator, n: int, tied: bool) -> torch.Tensor:
    """Dyadic-grid embeddings: dot products are exact in float32; a coarse grid makes ties frequent."""
    levels = 2 if tied else 64
    return torch.randint(-levels, levels + 1, (n, 6 if tied else 16), generator=generator).float() / levels


def _random_positives(generator: torch.Generator, num_queries: int, num_gallery: int) -> list[list[int]]:
    counts = torch.randint(1, 6, (num_queries,), generator=generator).tolist()
    return [torch.randperm(num_gallery, generator=generator)[:c].tolist() for c in counts]


def _full_sort_ranks(query: torch.Tensor, gallery: torch.Tensor, positives: list[list[int]]) -> torch.Tensor:
    """Reference: sort every full row, ties ordered positives last (pessimistic), and find the first positive."""
    sims = (query.double() @ gallery.double().T).numpy()
    ranks = []
    for row, pos in zip(sims, positives, strict=True):
        is_positive = np.zeros(len(row), dtype=bool)
        is_positive[pos] = True
        order = np.lexsort((is_positive, -row))
        ranks.append(int(np.flatnonzero(is_positive[order])[0]) + 1)
    return torch.tensor(ranks)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096])
@pytest.mark.parametrize("tied", [False, True])
def test_ranks_match_full_sort_reference(chunk_size, tied):
    generator = torch.Generator().manual_seed(chunk_size + tied)
    query, gallery = _grid_embeddings(generator, 203, tied), _grid_embeddings(generator, 517, tied)
    positives = _random_positives(generator, 203, 517)

    ranks = rank_of_positives(query, gallery, positives, chunk_size=chunk_size)

    assert ranks.dtype == torch.int64 and ranks.shape == (203,)
    assert torch.equal(ranks, _full_sort_ranks(query, gallery, positives))


_PATHS = {
    "torch": {"faiss_above": None},
    "faiss": {"faiss_above": 0},
    "faiss_top_2": {"faiss_above": 0, "faiss_top_k": 2},
}


@pytest.mark.parametrize("rounded", [False, True])
@pytest.mark.parametrize("path", list(_PATHS))
def test_collapsed_embeddings_get_the_worst_rank(path, rounded):
    generator = torch.Generator().manual_seed(5)
    embedding = _normalized(generator, 1, dim=512)
    gallery = embedding.expand(40, -1)
    if rounded:  # unit vectors equal to `embedding` up to float rounding (some differ in the last bits)
        gallery = torch.nn.functional.normalize(embedding * torch.linspace(0.5, 3.0, 40)[:, None], dim=1)
        assert not torch.equal(gallery, embedding.expand(40, -1))
    query = embedding.expand(9, -1)

    ranks = rank_of_positives(query, gallery, torch.arange(9), **_PATHS[path])

    worst = 3 if path == "faiss_top_2" else 40  # the FAISS path reports ranks above top_k as top_k + 1
    assert ranks.tolist() == [worst] * 9
    assert retrieval_metrics(ranks, ks=(1, 2))["R@1"] == 0.0
    grouped = rank_of_positives(query, gallery, [list(range(i, i + 5)) for i in range(9)], **_PATHS[path])
    assert grouped.tolist() == [min(worst, 40 - 5 + 1)] * 9  # every tied positive of the group but one


@pytest.mark.parametrize("path", list(_PATHS))
def test_partial_ties_are_ranked_pessimistically(path):
    gallery = torch.eye(4)[[0, 1, 1, 1, 2]]  # items 1-3 are duplicates
    query = torch.eye(4)[[1]]

    def rank(positives):
        return rank_of_positives(query, gallery, positives, **_PATHS[path]).tolist()

    clamp = 3 if path == "faiss_top_2" else 5

    assert rank([[3]]) == [3]  # behind its two duplicates
    assert rank([[1, 3]]) == [2]  # its tied group mate does not count, the other duplicate does
    assert rank([[1, 2, 3]]) == [1]
    assert rank([[4]]) == [min(5, clamp)]  # below items 1-3 and tied with item 0
    assert rank([[0, 4]]) == [min(4, clamp)]


def test_tensor_positives_match_list_positives():
    generator = torch.Generator().manual_seed(1)
    query, gallery = _normalized(generator, 50), _normalized(generator, 80)
    single = torch.randint(0, 80, (50,), generator=generator)
    padded = torch.full((50, 3), -1)
    padded[:, 0], padded[::2, 2] = single, 5

    lists = [[int(s)] + ([5] if i % 2 == 0 else []) for i, s in enumerate(single)]
    assert torch.equal(
        rank_of_positives(query, gallery, single), rank_of_positives(query, gallery, single.tolist())
    )
    assert torch.equal(rank_of_positives(query, gallery, padded), rank_of_positives(query, gallery, lists))


@pytest.mark.parametrize("tied", [False, True])
def test_faiss_flat_matches_torch(tied):
    generator = torch.Generator().manual_seed(2)
    query, gallery = _grid_embeddings(generator, 150, tied), _grid_embeddings(generator, 400, tied)
    positives = _random_positives(generator, 150, 400)
    exact = rank_of_positives(query, gallery, positives, faiss_above=None)

    full = rank_of_positives(query, gallery, positives, faiss_above=0, faiss_top_k=400, chunk_size=33)
    top_20 = rank_of_positives(query, gallery, positives, faiss_above=0, faiss_top_k=20)

    assert torch.equal(full, exact)
    assert torch.equal(top_20, exact.clamp(max=21))
    censored, uncensored = retrieval_metrics(top_20, ks=(1, 10, 20)), retrieval_metrics(exact, ks=(1, 10, 20))
    assert all(censored[f"R@{k}"] == uncensored[f"R@{k}"] for k in (1, 10, 20))


def test_faiss_flat_matches_torch_on_rounded_duplicates():
    generator = torch.Generator().manual_seed(6)
    distinct = _normalized(generator, 60, dim=64)
    # Each item 5 times in the gallery, equal up to float rounding (rescaled, then renormalised).
    sources = torch.arange(60).repeat(5)[torch.randperm(300, generator=generator)]
    gallery = torch.nn.functional.normalize(
        distinct[sources] * (1 + torch.rand(300, 1, generator=generator)), dim=1
    )
    noisy = torch.nn.functional.normalize(distinct[40:] + 0.1 * _normalized(generator, 20, dim=64), dim=1)
    query = torch.cat([distinct[:40], noisy])
    # Queries 0-39: one copy of their own item is the positive, the other four tie with it (no ties beyond).
    positives = [[int((sources == i).nonzero()[0])] for i in range(40)]
    positives += _random_positives(generator, 20, 300)
    exact = rank_of_positives(query, gallery, positives, faiss_above=None)

    full = rank_of_positives(query, gallery, positives, faiss_above=0, faiss_top_k=300, chunk_size=17)
    top_10 = rank_of_positives(query, gallery, positives, faiss_above=0, faiss_top_k=10)

    assert exact[:40].tolist() == [5] * 40
    assert torch.equal(full, exact)
    assert torch.equal(top_10, exact.clamp(max=11))


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_indexes_give_valid_ranks(index):
    generator = torch.Generator().manual_seed(3)
    gallery = _normalized(generator, 2000, dim=32)
    targets = torch.randint(0, 2000, (100,), generator=generator)
    query = torch.nn.functional.normalize(
        gallery[targets] + 0.05 * torch.randn(100, 32, generator=generator), dim=1
    )

    ranks = rank_of_positives(query, gallery, targets, faiss_above=0, faiss_index=index, faiss_top_k=10)

    assert ranks.dtype == torch.int64 and ranks.shape == (100,)
    assert ranks.min() >= 1 and ranks.max() <= 11
    assert (ranks == 1).float().mean() > 0.9


def test_search_topk_torch_matches_faiss():
    generator = torch.Generator().manual_seed(4)
    query, gallery = _normalized(generator, 70), _normalized(generator, 300)

    scores, indices = search_topk(query, gallery, k=10, chunk_size=16)
    faiss_scores, faiss_indices = search_topk(query, gallery, k=10, use_faiss=True)

    assert indices.shape == (70, 10) and indices.dtype == torch.int64
    assert torch.equal(indices, faiss_indices)
    torch.testing.assert_close(scores, faiss_scores)
    torch.testing.assert_close(scores, (query @ gallery.T).topk(10, dim=1).values)


def test_metrics_on_hand_made_ranks():
    metrics = retrieval_metrics(torch.tensor([1, 2, 11, 4]))
    assert metrics == {"R@1": 0.25, "R@5": 0.75, "R@10": 0.75, "median_rank": 3.0, "mean_rank": 4.5}
    assert retrieval_metrics(np.array([3, 1, 2]), ks=(2,)) == {
        "R@2": 2 / 3,
        "median_rank": 2.0,
        "mean_rank": 2.0,
    }


def test_chance_recall_closed_forms():
    assert chance_recall(100, 1, 10) == pytest.approx(0.1)
    assert chance_recall(10, 5, 6) == 1.0
    assert chance_recall(1000, [1, 1, 5], 1) == pytest.approx((0.001 + 0.001 + 0.005) / 3)
    assert chance_median_rank(100, 1) == 50.5
    assert chance_median_rank(101, 1) == 51.0


def test_chance_levels_match_monte_carlo():
    rng = np.random.default_rng(0)
    num_gallery, positives_per_query, trials = 50, [1, 5, 5, 2], 20_000
    ranks = np.concatenate(
        [
            np.argsort(rng.random((trials, num_gallery)), axis=1)[:, :p].min(axis=1) + 1
            for p in positives_per_query
        ]
    )

    for k in (1, 5, 10):
        expected = chance_recall(num_gallery, positives_per_query, k)
        assert np.mean(ranks <= k) == pytest.approx(expected, abs=0.01)
    assert abs(np.median(ranks) - chance_median_rank(num_gallery, positives_per_query)) <= 1


def test_positives_from_ids_for_captions():
    caption_image_ids = torch.tensor([7, 7, 3, 7, 3])  # five captions of two images
    image_ids = ["7", "3"]
    image_ids_int = [7, 3]

    assert positives_from_ids(caption_image_ids, image_ids_int) == [[0], [0], [1], [0], [1]]
    assert positives_from_ids(image_ids_int, caption_image_ids) == [[0, 1, 3], [2, 4]]
    with pytest.raises(ValueError, match="Query 0 has id 7, which is not in gallery_ids"):
        positives_from_ids(caption_image_ids, image_ids)


def test_image_to_text_rank_is_that_of_first_correct_caption():
    images = torch.eye(3)
    captions = torch.tensor([[0.5, 0.5, 0], [0.1, 0.9, 0], [0.8, 0, 0.2], [0, 0.1, 0.9], [0.7, 0, 0]])
    caption_image_ids = [0, 1, 2, 2, 0]

    ranks = rank_of_positives(images, captions, positives_from_ids([0, 1, 2], caption_image_ids))

    # Image 0: caption 2 (of image 2, score 0.8) outranks its best own caption, caption 4 (0.7).
    assert ranks.tolist() == [2, 1, 1]


@pytest.mark.parametrize(
    ("query", "gallery", "positives", "match"),
    [
        (torch.randn(2, 8), torch.randn(5, 4), [[0], [1]], "query_embeds has D=8 but gallery_embeds has D=4"),
        (torch.randn(2, 4), torch.randn(5, 4), [[0], []], "Query 1 has no positive gallery item"),
        (torch.randn(2, 4), torch.randn(0, 4), [[0], [0]], "gallery_embeds is empty"),
        (
            torch.randn(2, 4),
            torch.randn(5, 4),
            [[0], [5]],
            "Query 1 has positive index 5, outside the gallery",
        ),
        (torch.randn(2, 4), torch.randn(5, 4), [[0]], "positives has 1 entries but there are 2 queries"),
        (torch.randn(4), torch.randn(5, 4), [[0]], r"query_embeds must be a 2-D float tensor"),
        (torch.randn(2, 4), torch.randn(5, 4), torch.tensor([[0, -1], [-1, -1]]), "Query 1 has no positive"),
    ],
)
def test_bad_input_errors_name_the_problem(query, gallery, positives, match):
    with pytest.raises(ValueError, match=match):
        rank_of_positives(query, gallery, positives)


def test_bad_metric_input_errors():
    with pytest.raises(ValueError, match="ranks must be integers >= 1"):
        retrieval_metrics([0, 1, 2])
    with pytest.raises(ValueError, match="non-empty"):
        retrieval_metrics([])
    with pytest.raises(ValueError, match="faiss_index must be"):
        rank_of_positives(torch.randn(1, 4), torch.randn(3, 4), [[0]], faiss_index="lsh")
    with pytest.raises(ValueError, match="num_positives_per_query must be between 1 and num_gallery=10"):
        chance_recall(10, 11, 1)


def test_evaluate_module_imports_nothing_from_the_project():
    # evaluate copies the script alone into its module cache, so it must not import recipes or modeling.
    tree = ast.parse((RECALL_METRIC_PATH / "retrieval_recall.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." if node.level else node.module.split(".")[0])
    assert imported <= {"datasets", "evaluate", "numpy"}


def test_evaluate_module_loads_offline_and_matches_retrieval_metrics(tmp_path):
    rank_sets = [[1, 2, 11, 4], [5, 5, 1], list(range(1, 40, 3))]
    script = (
        "import json\n"
        "from recipes.evaluation.ranking import load_recall_metric\n"
        "metric = load_recall_metric()\n"
        f"out = [metric.compute(ranks=r, ks=[1, 5, 10, 20]) for r in {rank_sets!r}]\n"
        "metric.add_batch(ranks=[1, 2])\n"
        "metric.add_batch(ranks=[11, 4])\n"
        "out.append(metric.compute())\n"
        "print(json.dumps(out))\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr

    *per_set, batched = json.loads(result.stdout.strip().splitlines()[-1])
    for ranks, computed in zip(rank_sets, per_set, strict=True):
        assert computed == retrieval_metrics(ranks, ks=(1, 5, 10, 20))
    assert batched == retrieval_metrics([1, 2, 11, 4])
