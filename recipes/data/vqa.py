"""VQA answers: the normalisation answers are counted by, the answer vocabulary of a classification head and its
VQA v2 soft-score targets; for any VQA dataset with an `answers` column (the annotators' answers per question)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NUMBER_DIGITS = {word: str(i) for i, word in enumerate(NUMBER_WORDS)}
_ARTICLES = frozenset({"a", "an", "the"})


def normalize_answer(answer: str) -> str:
    """A simple VQA answer normalisation: lowercase, apostrophes dropped, other punctuation to spaces, number
    words to digits (``three`` -> ``3``), articles dropped, whitespace collapsed."""
    text = answer.lower().replace("\u2019", "'")
    text = re.sub(r"(?<=\w)'(?=\w)", "", text)
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(_NUMBER_DIGITS.get(word, word) for word in text.split() if word not in _ARTICLES)


def _answers_column(split: Any, column: str) -> Iterable[Any]:
    if isinstance(split, datasets.Dataset):
        return split[column]
    return (row[column] for row in split)


def answer_vocabulary(
    split: datasets.Dataset | Iterable[Mapping[str, Any]], min_count: int = 1, column: str = "answers"
) -> list[str]:
    """The normalised answers given at least ``min_count`` times by the annotators of ``split`` (all ten
    answers of every question count), most frequent first, ties in alphabetical order: the answer classes of a
    VQA head."""
    counts = Counter(normalize_answer(a) for answers in _answers_column(split, column) for a in answers)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [answer for answer, count in ranked if count >= min_count and answer]


def out_of_vocabulary_share(
    split: datasets.Dataset | Iterable[Mapping[str, Any]], vocabulary: Iterable[str]
) -> float:
    """Share of the questions of ``split`` whose (normalised) ``multiple_choice_answer`` is not in
    ``vocabulary``: the questions a classifier over that vocabulary cannot get right. 0.0 for an empty
    split."""
    known = {normalize_answer(answer) for answer in vocabulary}
    answers = [normalize_answer(a) for a in _answers_column(split, "multiple_choice_answer")]
    return sum(answer not in known for answer in answers) / len(answers) if answers else 0.0


def soft_scores(answers: Iterable[str], vocabulary: Sequence[str] | Mapping[str, int]) -> dict[int, float]:
    """VQA v2 soft targets of one question: ``{index in vocabulary: min(1, count / 3)}`` over its annotators'
    answers (normalised with `normalize_answer`); answers outside the vocabulary are dropped.

    This is the common simplification (ViLT, BUTD) of the official accuracy, which averages over the ten
    subsets of nine annotators.
    """
    index = vocabulary if isinstance(vocabulary, Mapping) else {a: i for i, a in enumerate(vocabulary)}
    counts = Counter(normalize_answer(answer) for answer in answers)
    scores = {index[a]: min(1.0, count / 3) for a, count in counts.items() if a in index}
    return dict(sorted(scores.items()))
