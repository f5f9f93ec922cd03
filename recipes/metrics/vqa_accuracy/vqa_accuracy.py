"""VQA accuracy: the official soft accuracy of open-ended visual question answering (VQA v1 / v2)."""

import re

import datasets
import evaluate

_DESCRIPTION = """\
VQA accuracy scores open-ended visual question answering against the answers of several human annotators
(ten per question in VQA v1 and v2). An answer counts as fully correct when at least three annotators gave it:
for each annotator, the accuracy over the other annotators is min(#matching answers among them / 3, 1), and a
question's accuracy is the mean of these leave-one-out accuracies (so an answer given by one annotator out of
ten scores 0.3, by two 0.6, by three 0.9 and by four or more 1.0). Both the predicted answer and the
annotators' answers are normalised first (punctuation, number words, articles, contractions) as in the
official evaluation script, `vqaEval.py`. The overall accuracy is the mean over questions; given the answer
type of each question ("yes/no", "number", "other" in VQA), the mean per answer type is reported too.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one predicted answer per question.
    references (`list` of `list` of `str`): the annotators' answers of each question (normally 10).
    answer_types (`list` of `str`, *optional*): the answer type of each question (e.g. "yes/no", "number",
        "other"), in the order of all the questions scored, including those added with `add_batch`.

Returns:
    accuracy (`float`): mean VQA accuracy over questions, in [0, 1].
    accuracy_<type> (`float`): mean accuracy over the questions of each answer type, only with
        `answer_types`; "/" in a type becomes "_" in the key (e.g. `accuracy_yes_no`).
    count_<type> (`int`): number of questions of each answer type, only with `answer_types`.

Examples:
    >>> vqa_accuracy = evaluate.load("path/to/vqa_accuracy")  # the folder holding this script
    >>> vqa_accuracy.compute(
    ...     predictions=["Yes", "two", "red"],
    ...     references=[["yes"] * 10, ["2"] * 2 + ["3"] * 8, ["red"] + ["dark red"] * 9],
    ...     answer_types=["yes/no", "number", "other"],
    ... )
    {'accuracy': 0.3, 'accuracy_number': 0.6, 'accuracy_other': 0.3, 'accuracy_yes_no': 0.0, 'count_number': 1, 'count_other': 1, 'count_yes_no': 1}

    "Yes" scores 0: the official script leaves answers unnormalised when all annotators agree (see the card).
"""

_CITATION = """\
@inproceedings{antol2015vqa,
  title={{VQA}: Visual Question Answering},
  author={Antol, Stanislaw and Agrawal, Aishwarya and Lu, Jiasen and Mitchell, Margaret and Batra, Dhruv and
          Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={Proceedings of the IEEE International Conference on Computer Vision (ICCV)},
  pages={2425--2433},
  year={2015}
}
@inproceedings{goyal2017making,
  title={Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in Visual Question Answering},
  author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={6904--6913},
  year={2017}
}
"""

# Answer normalisation, transcribed from PythonEvaluationTools/vqaEvaluation/vqaEval.py of
# github.com/GT-Vision-Lab/VQA at commit a013f0043c1e2cdc995922dfe257f7149aa9af06 (March 2021, "Fixed
# processing answers bug", the latest version). Tables and regexes are copied verbatim, quirks included (see
# the comments), so that scores match the official ones.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
# Keys with capitals ("Im", "Ive", ...) never match: words are lowercased before the lookup.
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")  # fmt: skip
# "(?!<=\d)" is a negative lookahead (the intended lookbehind would be "(?<!\d)"), so a period is removed
# unless a digit follows it: "3.5" keeps its period, "dog." and "3." lose theirs.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
# vqaEval.py calls `periodStrip.sub("", text, re.UNICODE)`: the third positional argument of `Pattern.sub` is
# `count`, so at most re.UNICODE == 32 periods are removed.
_PERIOD_STRIP_COUNT = 32


def clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then leading and trailing whitespace stripped (applied to every answer)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """`processPunctuation` of vqaEval.py: each punctuation mark is deleted when the answer has that mark next
    to a space, or a comma between digits anywhere ("1,000"), and replaced by a space otherwise ("hot-dog"
    becomes "hot dog"); periods not followed by a digit are deleted."""
    out = text
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or COMMA_STRIP.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """`processDigitArticle` of vqaEval.py: lowercased, split on whitespace, number words "none" to "ten" to
    digits, articles dropped, contractions written with their apostrophe ("dont" to "don't"), joined by single
    spaces."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str) -> str:
    """Full normalisation of one answer: whitespace, punctuation, then digits, articles and contractions."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def question_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy of one predicted answer against the annotators' answers of its question, in [0, 1]."""
    prediction = clean_whitespace(prediction)
    answers = [clean_whitespace(answer) for answer in answers]
    # As in vqaEval.py, punctuation and digit/article processing is applied (to the prediction and to the
    # annotators' answers alike) only when the annotators' answers are not all identical: when they all agree,
    # the prediction must equal their common answer up to surrounding whitespace, e.g. "Yes" or "yes." scores
    # 0 against ten "yes". This is kept so that scores match the official ones; normalise predictions with
    # `normalize_answer` beforehand to avoid it (the annotators' answers in VQA are already normalised).
    if len(set(answers)) > 1:
        answers = [process_digit_article(process_punctuation(answer)) for answer in answers]
        prediction = process_digit_article(process_punctuation(prediction))
    # Leave-one-out over annotators: vqaEval.py drops the annotator's answer record (unique by answer_id) and
    # counts matches among the other N - 1 answers.
    matches = sum(answer == prediction for answer in answers)
    per_annotator = [min(1.0, float(matches - (answer == prediction)) / 3) for answer in answers]
    return float(sum(per_annotator)) / len(per_annotator)


def answer_type_key(answer_type: str) -> str:
    """Suffix of the per-type result keys: "yes/no" -> "yes_no"."""
    return answer_type.replace("/", "_")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=[
                "https://visualqa.org/evaluation.html",
                "https://github.com/GT-Vision-Lab/VQA/blob/master/PythonEvaluationTools/vqaEvaluation/vqaEval.py",
            ],
        )

    def _compute(self, predictions, references, answer_types=None) -> dict:
        if len(predictions) != len(references):
            raise ValueError(
                f"predictions and references must have one entry per question, got {len(predictions)} "
                f"predictions and {len(references)} references."
            )
        if len(predictions) == 0:
            raise ValueError("No questions to score: predictions and references are empty.")
        for index, answers in enumerate(references):
            if len(answers) == 0:
                raise ValueError(
                    f"Question {index} has no reference answers: every question needs at least one annotator "
                    "answer (VQA has 10)."
                )
        if answer_types is not None:
            answer_types = list(answer_types)
            if len(answer_types) != len(predictions):
                raise ValueError(
                    f"answer_types must have one entry per question, got {len(answer_types)} answer types for "
                    f"{len(predictions)} questions."
                )
            bad = [t for t in answer_types if not isinstance(t, str) or not t]
            if bad:
                raise ValueError(f"answer_types must be non-empty strings, got {bad[0]!r}.")

        scores = [question_accuracy(p, list(r)) for p, r in zip(predictions, references, strict=True)]
        metrics = {"accuracy": float(sum(scores)) / len(scores)}
        if answer_types is None:
            return metrics

        by_type: dict[str, list[float]] = {}
        for answer_type, score in zip(answer_types, scores, strict=True):
            by_type.setdefault(answer_type, []).append(score)
        keys: dict[str, str] = {}
        for answer_type in by_type:
            key = answer_type_key(answer_type)
            if key in keys:
                raise ValueError(
                    f"Answer types {keys[key]!r} and {answer_type!r} would both be reported as "
                    f"'accuracy_{key}'; rename one of them."
                )
            keys[key] = answer_type
        for key in sorted(keys):
            values = by_type[keys[key]]
            metrics[f"accuracy_{key}"] = float(sum(values)) / len(values)
        for key in sorted(keys):
            metrics[f"count_{key}"] = len(by_type[keys[key]])
        return metrics
