"""Evaluation of the matching families: VQA accuracy per answer type (with chance and a question-only baseline),
image-text matching accuracy, and re-ranking a retriever's top-k candidates with the matching head (as BLIP does).
"""

from __future__ import annotations

import logging
import random
from collections import Counter

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from recipes.data.matching import PairCollator, VqaCollator
from recipes.data.retrieval import RetrievalCollator, RetrievalColumns, caption_group_id
from recipes.data.vqa import normalize_answer
from recipes.evaluation.ranking import positives_from_ids
from recipes.evaluation.retrieval import embed_dataset
from recipes.evaluation.vqa import vqa_accuracy

logger = logging.getLogger(__name__)

ANSWER_TYPES = ("yes/no", "number", "other")
RERANK_KS = (1, 5, 10)


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict_answers(
    model,
    processor,
    dataset,
    batch_size: int = 32,
    question_only: bool = False,
    description: str = "answering",
) -> list[str]:
    """The answer head's top answer (`config.id2label`) for every question of `dataset`."""
    model.eval()
    collator = VqaCollator(processor, model.config.label2id, question_only=question_only)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    predictions = []
    for batch in tqdm(loader, desc=description, unit="batch", leave=False):
        batch.pop("labels")
        batch = {k: v.to(_device(model)) for k, v in batch.items()}
        predictions += [id2label[int(i)] for i in model(**batch).logits.argmax(-1).cpu()]
    return predictions


def _question_accuracy(candidate: str, answers: list[str]) -> float:
    """The VQA accuracy of `candidate` on one question: over the 10 leave-one-out subsets of annotators, the mean of
    min(#matches / 3, 1), in closed form (m matches: m subsets lose one of them)."""
    m = sum(normalize_answer(a) == candidate for a in answers)
    n = len(answers)
    return (m * min((m - 1) / 3, 1.0) + (n - m) * min(m / 3, 1.0)) / n if m else 0.0


def chance_accuracy(dataset, train_answers: dict[str, set[str]]) -> dict[str, float]:
    """Per answer type, the expected VQA accuracy of an answer drawn uniformly from the training answers of that
    type (yes/no: 2; number: the counts seen; other: every noun and colour seen), and overall."""
    per_type: dict[str, list[float]] = {}
    for answers, answer_type in zip(dataset["answers"], dataset["answer_type"], strict=True):
        candidates = train_answers[answer_type]
        distinct = {normalize_answer(a) for a in answers} & candidates
        score = sum(_question_accuracy(a, answers) for a in distinct) / len(candidates)
        per_type.setdefault(answer_type, []).append(score)
    result = {f"accuracy_{t.replace('/', '_')}": sum(v) / len(v) for t, v in per_type.items()}
    result["accuracy"] = sum(sum(v) for v in per_type.values()) / sum(len(v) for v in per_type.values())
    return result


def training_answers_by_type(train) -> dict[str, set[str]]:
    """The distinct (normalised) answers of each answer type in the training split."""
    by_type: dict[str, set[str]] = {}
    for answers, answer_type in zip(train["answers"], train["answer_type"], strict=True):
        by_type.setdefault(answer_type, set()).update(normalize_answer(a) for a in answers)
    return by_type


def evaluate_vqa(model, processor, dataset, batch_size: int = 32, question_only: bool = False) -> dict:
    """VQA accuracy overall and per answer type (the standard formula, `recipes/metrics/vqa_accuracy`), the number of
    questions per type, and the share answered with an answer outside the model's vocabulary (never right)."""
    predictions = predict_answers(model, processor, dataset, batch_size, question_only)
    result = vqa_accuracy(predictions, list(dataset["answers"]), list(dataset["answer_type"]))
    vocabulary = set(model.config.label2id)
    majority = [
        Counter(map(normalize_answer, answers)).most_common(1)[0][0] for answers in dataset["answers"]
    ]
    result["out_of_vocabulary_share"] = sum(answer not in vocabulary for answer in majority) / len(majority)
    result["num_questions"] = len(dataset)
    result["examples"] = [
        {"question": q, "prediction": p, "answers": sorted(set(a))}
        for q, p, a in list(zip(dataset["question"], predictions, dataset["answers"], strict=True))[:12]
    ]
    return result


# ---------------------------------------------------------------------------------------------------- matching
def negative_partners(texts: list[str], seed: int = 0) -> list[int]:
    """For each row, another row whose description differs (normalised): the image of a negative pair. Seeded."""
    generator = random.Random(seed)
    groups = [caption_group_id(t) for t in texts]
    partners = []
    if len(set(groups)) < 2:
        raise ValueError("Matching needs at least two different descriptions to make negative pairs.")
    for group in groups:
        while True:
            other = generator.randrange(len(texts))
            if groups[other] != group:
                partners.append(other)
                break
    return partners


@torch.no_grad()
def match_scores(
    model, processor, texts, others, batch_size: int = 32, other_modality: str = "image"
) -> torch.Tensor:
    """`P(match)` of each (text, image) pair from the matching head."""
    model.eval()
    collator = PairCollator(processor, other_column="other", other_modality=other_modality)
    rows = [{"text": t, "other": o} for t, o in zip(texts, others, strict=True)]
    scores = []
    for start in range(0, len(rows), batch_size):
        batch = collator(rows[start : start + batch_size])
        inputs = {
            k: v.to(_device(model))
            for k, v in batch.items()
            if k not in ("group_ids", "mlm_input_ids", "mlm_labels", "return_loss")
        }
        scores.append(model(**inputs).logits.float().softmax(-1)[:, 1].cpu())
    return torch.cat(scores)


def evaluate_matching(
    model, processor, dataset, batch_size: int = 32, seed: int = 0, text_column: str = "text",
    image_column: str = "image",
) -> dict:  # fmt: skip
    """Image-text matching on `dataset`: each description with its own image (a match) and with the image of a
    random other description (no match). Accuracy at P(match) > 0.5 over both kinds (chance 0.5), and the share of
    rows whose own image scores above the other (a pairwise accuracy, chance 0.5)."""
    texts, images = list(dataset[text_column]), list(dataset[image_column])
    partners = negative_partners(texts, seed)
    positive = match_scores(model, processor, texts, images, batch_size)
    negative = match_scores(model, processor, texts, [images[j] for j in partners], batch_size)
    correct = (positive > 0.5).sum() + (negative <= 0.5).sum()
    return {
        "accuracy": float(correct) / (2 * len(texts)),
        "pairwise_accuracy": float((positive > negative).float().mean()),
        "positive_accuracy": float((positive > 0.5).float().mean()),
        "negative_accuracy": float((negative <= 0.5).float().mean()),
        "num_pairs": 2 * len(texts),
        "chance": 0.5,
    }


# --------------------------------------------------------------------------------------------------- re-ranking
def _recalls(ranks: torch.Tensor) -> dict[str, float]:
    return {f"R@{k}": float((ranks <= k).float().mean()) for k in RERANK_KS}


def _first_positive_ranks(order: torch.Tensor, positives: list[list[int]]) -> torch.Tensor:
    """The 1-based rank of each row's first positive in its ranked gallery `order` `(queries, gallery)`."""
    return torch.tensor(
        [next(r + 1 for r, g in enumerate(row.tolist()) if g in set(p)) for row, p in zip(order, positives, strict=True)]
    )  # fmt: skip


def rerank_retrieval(
    retriever, retriever_processor, matcher, matcher_processor, dataset, top_k: int = 16, batch_size: int = 32,
    text_column: str = "text", image_column: str = "image",
) -> dict:  # fmt: skip
    """
    Re-rank a retriever's candidates with the matching head, text->image and image->text (as BLIP does): the
    retriever ranks the whole gallery; its top `top_k` are re-scored by `P(match)` of the matcher and re-ordered
    (the rest keep their places below). Positives are rows with the same (normalised) description. Returns R@K
    before and after, per direction.
    """
    columns = RetrievalColumns(text=text_column, audio=None, image=image_column, id=None)
    collator = RetrievalCollator(retriever_processor, columns=columns)
    retriever.eval()
    embeds, group_ids = embed_dataset(
        retriever, collator, dataset, [("text",), ("image",)], batch_size, description="retriever embeddings"
    )
    texts, images = list(dataset[text_column]), list(dataset[image_column])
    results = {"top_k": top_k, "num_items": len(texts)}
    for direction, query, gallery in (("text_to_image", "text", "image"), ("image_to_text", "image", "text")):
        positives = positives_from_ids(group_ids, group_ids)
        similarity = embeds[(query,)] @ embeds[(gallery,)].T
        order = similarity.argsort(dim=1, descending=True, stable=True)
        before = _first_positive_ranks(order, positives)
        top = order[:, :top_k]
        pair_texts, pair_images = [], []
        for q in range(len(texts)):
            for g in top[q].tolist():
                t, i = (q, g) if query == "text" else (g, q)
                pair_texts.append(texts[t])
                pair_images.append(images[i])
        scores = match_scores(matcher, matcher_processor, pair_texts, pair_images, batch_size).view(
            len(texts), -1
        )
        reranked = top.gather(1, scores.argsort(dim=1, descending=True, stable=True))
        reordered = torch.cat([reranked, order[:, top_k:]], dim=1)
        after = _first_positive_ranks(reordered, positives)
        results[direction] = {"before": _recalls(before), "after": _recalls(after)}
        results[direction]["gain_R@1"] = (
            results[direction]["after"]["R@1"] - results[direction]["before"]["R@1"]
        )
    return results


def format_matching_results(results: dict) -> str:
    """The test figures of a matching / VQA run as Markdown tables (chance beside each)."""
    lines = []
    for split, parts in results.items():
        if "vqa" in parts:
            vqa, chance = parts["vqa"], parts["vqa"]["chance"]
            keys = ["accuracy", *(f"accuracy_{t.replace('/', '_')}" for t in ANSWER_TYPES)]
            lines += [
                f"VQA accuracy on {split} ({vqa['num_questions']} questions)",
                "",
                "| | overall | yes/no | number | other |",
                "|---|---:|---:|---:|---:|",
                "| model | " + " | ".join(f"{vqa.get(k, float('nan')):.3f}" for k in keys) + " |",
                "| chance | " + " | ".join(f"{chance.get(k, float('nan')):.3f}" for k in keys) + " |",
                "",
            ]
        if "matching" in parts:
            m = parts["matching"]
            lines += [
                f"Image-text matching on {split}: accuracy {m['accuracy']:.3f} over {m['num_pairs']} pairs "
                f"(positives {m['positive_accuracy']:.3f}, negatives {m['negative_accuracy']:.3f}; own image above "
                f"another's {m['pairwise_accuracy']:.3f}; chance 0.5)",
                "",
            ]
        if "rerank" in parts:
            r = parts["rerank"]
            lines += [
                f"Re-ranking the top {r['top_k']} of {r['retriever']} on {split}",
                "",
                "| direction | R@1 before | R@1 after | R@5 before | R@5 after |",
                "|---|---:|---:|---:|---:|",
            ]
            for direction in ("text_to_image", "image_to_text"):
                d = r[direction]
                lines.append(
                    f"| {direction.replace('_to_', '→')} | {d['before']['R@1']:.3f} | {d['after']['R@1']:.3f} | "
                    f"{d['before']['R@5']:.3f} | {d['after']['R@5']:.3f} |"
                )
            lines.append("")
    return "\n".join(lines)
