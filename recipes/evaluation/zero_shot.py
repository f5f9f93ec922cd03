"""Zero-shot classification with the stock transformers pipelines (`zero-shot-image-classification`,
`zero-shot-audio-classification`) on a saved folder of a family that supports them (late fusion): the accuracy of
the top-ranked label against its chance levels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tqdm.auto import tqdm

#: Readable names of the Tux Paint stamp categories, used as candidate labels.
STAMP_CATEGORY_LABELS = {"naturalforces": "natural forces"}
#: The pipeline task of each modality, and its hypothesis template.
TASKS = {
    "image": ("zero-shot-image-classification", "This is a picture of {}."),
    "audio": ("zero-shot-audio-classification", "This is a sound of {}."),
}


def category_label(category: str) -> str:
    return STAMP_CATEGORY_LABELS.get(category, category)


def zero_shot_pipeline(model: str, modality: str, **kwargs):
    """The stock pipeline of `modality` on a saved folder or Hub id (remote code trusted)."""
    from transformers import pipeline

    task, _ = TASKS[modality]
    return pipeline(task, model=model, trust_remote_code=True, **kwargs)


def zero_shot_accuracy(
    classifier, items: Sequence, truth: Sequence[str], candidate_labels: Sequence[str], modality: str
) -> dict:
    """Top-1 accuracy of `classifier` on `items` (images, or 1-D waveforms at its feature extractor's rate) against
    the true labels, with the accuracy of a uniform random guess (`chance`) and of always answering the most frequent
    true label (`majority`)."""
    if len(items) != len(truth) or not items:
        raise ValueError(f"Got {len(items)} items for {len(truth)} labels; give one label per item.")
    unknown = sorted(set(truth) - set(candidate_labels))
    if unknown:
        raise ValueError(
            f"True labels {unknown} are not among the candidate labels {list(candidate_labels)}."
        )
    _, template = TASKS[modality]
    predicted = []
    for item in tqdm(items, desc=f"zero-shot {modality}", unit="item", leave=False):
        ranked = classifier(item, candidate_labels=list(candidate_labels), hypothesis_template=template)
        predicted.append(ranked[0]["label"])
    correct = sum(p == t for p, t in zip(predicted, truth, strict=True))
    return {
        "accuracy": correct / len(truth),
        "chance": 1 / len(candidate_labels),
        "majority": Counter(truth).most_common(1)[0][1] / len(truth),
        "num_items": len(truth),
        "num_labels": len(candidate_labels),
        "predictions": predicted,
    }
