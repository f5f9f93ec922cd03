"""The matching / VQA evaluation: the closed-form per-question accuracy used for chance agrees with the VQA metric
module, chance is worked out by hand, and re-ranking only moves candidates inside the top k."""

import pytest
import torch

from recipes.evaluation.matching import (
    _first_positive_ranks,
    _question_accuracy,
    chance_accuracy,
    negative_partners,
)
from recipes.evaluation.vqa import vqa_accuracy


@pytest.mark.parametrize("matches", range(0, 11))
def test_the_closed_form_question_accuracy_is_the_metrics_leave_one_out_average(matches):
    answers = ["dog"] * matches + ["cat"] * (10 - matches)
    expected = vqa_accuracy(["dog"], [answers])["accuracy"]
    assert _question_accuracy("dog", answers) == pytest.approx(expected)
    # By hand: m = 1 -> 9 subsets keep the match (1/3 each), 1 loses it -> 9/30 = 0.3; m >= 4 -> 1.
    by_hand = {0: 0.0, 1: 0.3, 2: 0.6, 3: 0.9}.get(matches, 1.0)
    assert _question_accuracy("dog", answers) == pytest.approx(by_hand)


def test_chance_is_the_mean_accuracy_of_a_uniform_training_answer_of_the_type():
    dataset = {
        "answers": [["yes"] * 10, ["3"] * 10, ["frog"] * 7 + ["animal"] * 3],
        "answer_type": ["yes/no", "number", "other"],
    }
    candidates = {
        "yes/no": {"yes", "no"},
        "number": {str(i) for i in range(1, 7)},
        "other": {"frog", "animal", "cat", "dog"},
    }
    chance = chance_accuracy(dataset, candidates)
    assert chance["accuracy_yes_no"] == pytest.approx(1 / 2)
    assert chance["accuracy_number"] == pytest.approx(1 / 6)
    # frog: 7 matches -> 1.0; animal: 3 matches -> 0.9 (7 subsets keep 3 -> 1, 3 keep 2 -> 2/3: (7 + 2) / 10).
    assert chance["accuracy_other"] == pytest.approx((1.0 + 0.9) / 4)
    assert chance["accuracy"] == pytest.approx((1 / 2 + 1 / 6 + 1.9 / 4) / 3)


def test_negative_partners_never_share_the_description():
    texts = ["A dog.", "a dog", "A cat.", "A frog.", "A cat"]
    partners = negative_partners(texts, seed=3)
    assert partners == negative_partners(texts, seed=3)
    normalise = lambda t: t.lower().strip(". ")  # noqa: E731
    assert all(normalise(texts[p]) != normalise(t) for t, p in zip(texts, partners, strict=True))
    with pytest.raises(ValueError, match="two different descriptions"):
        negative_partners(["A dog.", "a dog"])


def test_first_positive_ranks():
    order = torch.tensor([[2, 0, 1], [1, 2, 0]])
    assert _first_positive_ranks(order, [[0], [0, 2]]).tolist() == [2, 2]
