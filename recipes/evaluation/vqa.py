"""VQA accuracy through the repository's `evaluate` module (`recipes/metrics/vqa_accuracy`, the official formula)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import evaluate

VQA_METRIC_PATH = Path(__file__).resolve().parents[1] / "metrics" / "vqa_accuracy"


@functools.lru_cache(maxsize=1)
def load_vqa_metric() -> evaluate.EvaluationModule:
    return evaluate.load(str(VQA_METRIC_PATH))


def vqa_accuracy(
    predictions: Sequence[str], references: Sequence[Sequence[str]], answer_types: Sequence[str] | None = None
) -> dict:
    """`accuracy` (and `accuracy_<type>`, `count_<type>` per answer type, `yes/no` -> `yes_no`) in [0, 1]."""
    return load_vqa_metric().compute(
        predictions=list(predictions),
        references=[list(r) for r in references],
        answer_types=None if answer_types is None else list(answer_types),
    )
