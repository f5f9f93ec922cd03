"""The VQA accuracy `evaluate` module against values worked out by hand from the definition (official vqaEval.py:
leave-one-out over the annotators, min(#matches / 3, 1), answers normalised when the annotators disagree)."""

import pytest

from recipes.evaluation.vqa import VQA_METRIC_PATH, load_vqa_metric, vqa_accuracy


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        # m matching annotators of 10: the m subsets without one of them hold m - 1 matches, the other 10 - m hold m.
        (0, 0.0),
        (1, (1 * 0 + 9 * (1 / 3)) / 10),  # 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_leave_one_out_accuracy_of_one_question(matches, expected):
    references = [["dog"] * matches + ["cat"] * (10 - matches)]
    assert vqa_accuracy(["dog"], references)["accuracy"] == pytest.approx(expected)


def test_the_figures_of_the_definition():
    assert [vqa_accuracy(["dog"], [["dog"] * m + ["cat"] * (10 - m)])["accuracy"] for m in (1, 2, 3)] == [
        pytest.approx(0.3),
        pytest.approx(0.6),
        pytest.approx(0.9),
    ]


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("two", ["2"] * 5 + ["3"] * 5, 1.0),  # number words become digits when annotators disagree
        ("a dog.", ["dog"] * 5 + ["cat"] * 5, 1.0),  # articles and a final period go
        ("dont", ["don't"] * 5 + ["no"] * 5, 1.0),  # contractions restored
        ("yes!", ["yes"] * 5 + ["no"] * 5, 1.0),  # punctuation
        ("Yes", ["yes"] * 10, 0.0),  # all agree: vqaEval.py compares without normalising
        ("yes", ["yes"] * 10, 1.0),
    ],
)
def test_answers_are_normalised_as_the_official_script_does(prediction, answers, expected):
    assert vqa_accuracy([prediction], [answers])["accuracy"] == pytest.approx(expected)


def test_per_answer_type_means_and_counts():
    result = vqa_accuracy(
        ["yes", "no", "3", "cat"],
        [["yes"] * 10, ["yes"] * 10, ["3"] * 2 + ["4"] * 8, ["cat"] * 1 + ["dog"] * 9],
        ["yes/no", "yes/no", "number", "other"],
    )
    assert result["accuracy_yes_no"] == pytest.approx(0.5)  # 1 and 0
    assert result["accuracy_number"] == pytest.approx(0.6)
    assert result["accuracy_other"] == pytest.approx(0.3)
    assert result["accuracy"] == pytest.approx((1 + 0 + 0.6 + 0.3) / 4)
    assert (result["count_yes_no"], result["count_number"], result["count_other"]) == (2, 1, 1)


def test_bad_inputs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="Mismatch in the number of predictions"):
        vqa_accuracy(["yes"], [["yes"], ["no"]])
    with pytest.raises(ValueError, match="empty"):
        vqa_accuracy([], [])
    with pytest.raises(ValueError, match="no reference answers"):
        vqa_accuracy(["yes"], [[]])
    with pytest.raises(ValueError, match="answer_types must have one entry"):
        vqa_accuracy(["yes"], [["yes"]], ["yes/no", "other"])


def test_the_module_loads_from_its_folder_with_a_card():
    assert (VQA_METRIC_PATH / "README.md").is_file()
    assert load_vqa_metric().name == "vqa_accuracy"
