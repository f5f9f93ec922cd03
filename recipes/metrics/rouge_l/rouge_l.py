"""ROUGE-L as the COCO caption toolkit computes it (LCS-based F-measure, beta = 1.2)."""

import re

import datasets
import evaluate

_DESCRIPTION = """\
ROUGE-L (Lin, 2004) as the COCO caption evaluation toolkit (pycocoevalcap, `rouge/rouge.py`) computes it: for each
caption and each of its references, the length of their longest common subsequence of words (LCS) gives a
precision LCS / len(caption) and a recall LCS / len(reference); with P and R the largest of each over the
references, the caption scores ((1 + b^2) P R) / (R + b^2 P), b = 1.2 (0 when P or R is 0). The result is the mean
over captions. Captions and references are tokenized first as the toolkit does
(lower-cased, split as its PTB tokenizer would, approximated by a regex; punctuation dropped).
SPICE is not provided: its scorer downloads Stanford CoreNLP at run time, which cannot happen offline.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per item.
    references (`list` of `list` of `str`): the reference captions of each item (one or more).

Returns:
    rouge_l (`float`): mean ROUGE-L in [0, 1].

Examples:
    >>> rouge_l = evaluate.load("path/to/rouge_l")  # the folder holding this script
    >>> round(rouge_l.compute(predictions=["a red dog"], references=[["a big red dog"]])["rouge_l"], 4)
    0.8356
"""

_CITATION = """\
@inproceedings{lin2004rouge,
  title={{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out},
  pages={74--81},
  year={2004}
}
"""

BETA = 1.2

#: The punctuation the COCO caption toolkit drops after its PTB tokenizer (pycocoevalcap/tokenizer/ptbtokenizer.py
#: `PUNCTUATIONS`), plus the brackets and double quotes that tokenizer would have renamed (see `tokenize`).
DROPPED = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", "(", ")", "[", "]", "{", "}", '"'}  # fmt: skip
#: Abbreviations ("u.s."), numbers with separators ("3.5", "1,000", "10:30"), words joined by "-", "'" or "/"
#: ("t-shirt", "o'clock", "tv/radio"), "..." and "--", then any other single non-space character.
_TOKEN = re.compile(r"(?:[^\W\d_]\.){2,}|\d+(?:[.,:]\d+)+|\w+(?:[-'/]\w+)*|\.\.\.|--|\S")
#: Clitics split off as PTB does: "isn't" -> "is n't", "can't" -> "ca n't", "dog's" -> "dog 's".
_CLITIC = re.compile(r"(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_SPLIT_WORDS = {
    "cannot": ("can", "not"),
    "gonna": ("gon", "na"),
    "gotta": ("got", "ta"),
    "wanna": ("wan", "na"),
}


def tokenize(text: str) -> list[str]:
    """Words of a caption as the COCO caption toolkit scores them: lower-cased, split as its Java PTB tokenizer does,
    punctuation dropped. A regex approximation of that tokenizer, identical in the four captioning modules (each
    module is one self-contained file); it differs on rare forms, e.g. "mr." (PTB keeps the period), "(" (PTB keeps
    it as "-lrb-", here dropped), "at&t" (PTB "at & t")."""
    words: list[str] = []
    for token in _TOKEN.findall(text.lower()):
        clitic = _CLITIC.match(token)
        words.extend(clitic.groups() if clitic else _SPLIT_WORDS.get(token, (token,)))
    return [word for word in words if word not in DROPPED]


def check_inputs(predictions, references) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have one entry per item, got {len(predictions)} predictions and "
            f"{len(references)} references."
        )
    if len(predictions) == 0:
        raise ValueError("Nothing to score: predictions and references are empty.")
    for index, refs in enumerate(references):
        if len(refs) == 0:
            raise ValueError(f"Item {index} has no reference: every prediction needs at least one.")


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two word lists (dynamic programming)."""
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if word == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_score(candidate: list[str], references: list[list[str]], beta: float = BETA) -> float:
    if not candidate:
        return 0.0
    lcs = [lcs_length(ref, candidate) for ref in references]
    precision = max(length / len(candidate) for length in lcs)
    recall = max(length / len(ref) if ref else 0.0 for length, ref in zip(lcs, references))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RougeL(evaluate.Metric):
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
                "https://github.com/tylin/coco-caption",
                "https://github.com/salaniz/pycocoevalcap",
            ],
        )

    def _compute(self, predictions, references) -> dict:
        check_inputs(predictions, references)
        scores = [
            rouge_l_score(tokenize(p), [tokenize(r) for r in refs])
            for p, refs in zip(predictions, references)
        ]
        return {"rouge_l": sum(scores) / len(scores)}
