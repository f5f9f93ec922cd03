"""BLEU-1..4 as the COCO caption toolkit computes them (corpus-level, closest reference length)."""

import math
import re
from collections import Counter

import datasets
import evaluate

_DESCRIPTION = """\
BLEU (Papineni et al., 2002) as the COCO caption evaluation toolkit (pycocoevalcap, `bleu/bleu_scorer.py`) computes
it for image captioning: over the whole corpus, the n-gram precision p_n is the sum over captions of the n-gram
counts clipped by the largest count in any one reference, divided by the number of n-grams of the captions;
BLEU-N = BP * (p_1 * ... * p_N)^(1/N), with the brevity penalty BP = exp(1 - r/c) when the total caption length c
is below r, the sum over captions of the reference length closest to each caption's length (option "closest").
As in the toolkit, 1e-15 is added to each clipped count and 1e-9 to each n-gram total (so a corpus without a
matching 4-gram gets a tiny, not an undefined, BLEU-4). Captions and references are tokenized first as the toolkit does
(lower-cased, split as its PTB tokenizer would, approximated by a regex; punctuation dropped).
SPICE is not provided: its scorer downloads Stanford CoreNLP at run time, which cannot happen offline.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per item.
    references (`list` of `list` of `str`): the reference captions of each item (one or more).

Returns:
    bleu_1, bleu_2, bleu_3, bleu_4 (`float`): cumulative BLEU-n in [0, 1].
    brevity_penalty (`float`), length_ratio (`float`): BP and c / r.

Examples:
    >>> bleu4 = evaluate.load("path/to/bleu4")  # the folder holding this script
    >>> round(bleu4.compute(predictions=["a red dog runs"], references=[["a red dog runs fast"]])["bleu_4"], 4)
    0.7788
"""

_CITATION = """\
@inproceedings{papineni2002bleu,
  title={Bleu: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={Proceedings of ACL},
  pages={311--318},
  year={2002}
}
"""

SMALL, TINY = 1e-9, 1e-15

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


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(predictions: list[list[str]], references: list[list[list[str]]], max_n: int = 4) -> dict:
    """BLEU-1..max_n of tokenized captions against tokenized references (see the description)."""
    correct, guess = [0] * max_n, [0] * max_n
    test_length = reference_length = 0
    for words, refs in zip(predictions, references):
        test_length += len(words)
        # the reference length closest to the caption's (the shorter one on a tie)
        reference_length += min((abs(len(r) - len(words)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = ngrams(words, n)
            most = Counter()
            for ref in refs:
                for gram, count in ngrams(ref, n).items():
                    most[gram] = max(most[gram], count)
            correct[n - 1] += sum(min(count, most[gram]) for gram, count in counts.items())
            guess[n - 1] += max(0, len(words) - n + 1)
    ratio = (test_length + TINY) / (reference_length + SMALL)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = {}, 1.0
    for n in range(1, max_n + 1):
        product *= (correct[n - 1] + TINY) / (guess[n - 1] + SMALL)
        scores[f"bleu_{n}"] = product ** (1 / n) * penalty
    return {**scores, "brevity_penalty": penalty, "length_ratio": ratio}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu4(evaluate.Metric):
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
        return corpus_bleu(
            [tokenize(p) for p in predictions], [[tokenize(r) for r in refs] for refs in references]
        )
