"""Captioning metrics through the repository's `evaluate` modules (`recipes/metrics/{bleu4,meteor,rouge_l,cider_d}`:
the COCO caption toolkit's BLEU, ROUGE-L and CIDEr-D, NLTK's METEOR). SPICE is not among them: it downloads Stanford
CoreNLP at run time."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).resolve().parents[1] / "metrics"
CAPTION_METRIC_PATHS = {name: METRICS_DIR / name for name in ("bleu4", "meteor", "rouge_l", "cider_d")}


@functools.cache
def load_caption_metric(name: str) -> evaluate.EvaluationModule:
    if name not in CAPTION_METRIC_PATHS:
        raise ValueError(f"Unknown captioning metric {name!r}; choose one of {sorted(CAPTION_METRIC_PATHS)}.")
    return evaluate.load(str(CAPTION_METRIC_PATHS[name]))


def caption_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """`bleu_1`..`bleu_4`, `meteor`, `rouge_l` and `cider_d` of the captions against their references."""
    predictions, references = list(predictions), [list(r) for r in references]
    result: dict = {}
    for name in CAPTION_METRIC_PATHS:
        scores = load_caption_metric(name).compute(predictions=predictions, references=references)
        result.update(
            {k: float(v) for k, v in scores.items() if k.startswith(("bleu_", "meteor", "rouge", "cider"))}
        )
    return result
