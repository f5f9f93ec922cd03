"""Recall@K, median rank and mean rank for retrieval, from the rank of each query's best positive."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Retrieval recall summarises a retrieval run (e.g. text-to-image or audio-to-text search) from one number per
query: the 1-based rank of its best-ranked correct gallery item. Recall@K (R@K) is the fraction of queries
whose rank is at most K; the median and mean rank summarise the whole rank distribution (lower is better).
A query may have several correct gallery items (e.g. the five captions of an image); its rank is that of the
first correct one.
"""

_KWARGS_DESCRIPTION = """
Args:
    ranks (`list` of `int`): 1-based rank of each query's best-ranked correct gallery item.
    ks (`list` of `int`, *optional*, defaults to `[1, 5, 10]`): cut-offs K reported as `R@K`.

Returns:
    `R@K` (`float`): fraction of queries with rank <= K, in [0, 1], for each K in `ks`.
    median_rank (`float`): median rank (mean of the two middle ranks for an even number of queries).
    mean_rank (`float`): mean rank.

Examples:
    >>> recall = evaluate.load("path/to/retrieval_recall")  # the folder holding this script
    >>> recall.compute(ranks=[1, 2, 11, 4])
    {'R@1': 0.25, 'R@5': 0.75, 'R@10': 0.75, 'median_rank': 3.0, 'mean_rank': 4.5}
"""

_CITATION = """\
@inproceedings{karpathy2015deep,
  title={Deep Visual-Semantic Alignments for Generating Image Descriptions},
  author={Karpathy, Andrej and Fei-Fei, Li},
  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={3128--3137},
  year={2015}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"ranks": datasets.Value("int64")}),
            format="numpy",
            reference_urls=["https://arxiv.org/abs/1412.2306"],
        )

    def _compute(self, ranks, ks=(1, 5, 10)) -> dict:
        ranks = np.asarray(ranks)
        if ranks.ndim != 1 or ranks.size == 0:
            raise ValueError(f"ranks must be a non-empty 1-D sequence, got shape {ranks.shape}.")
        if ranks.min() < 1:
            raise ValueError("ranks must be integers >= 1 (ranks are 1-based); got values below 1.")
        if any(int(k) != k or k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {tuple(ks)}.")
        metrics = {f"R@{int(k)}": float(np.mean(ranks <= k)) for k in ks}
        metrics["median_rank"] = float(np.median(ranks))
        metrics["mean_rank"] = float(np.mean(ranks))
        return metrics
