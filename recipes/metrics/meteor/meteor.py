"""METEOR through NLTK (exact, stem and WordNet-synonym matches), averaged over captions."""

import re

import datasets
import evaluate

_DESCRIPTION = """\
METEOR (Banerjee and Lavie, 2005) as NLTK's `nltk.translate.meteor_score` computes it: the caption's words are
aligned to a reference's in three stages (exact words, Porter stems, WordNet synonyms); with m aligned words,
precision P = m / len(caption) and recall R = m / len(reference) give F = P R / (alpha P + (1 - alpha) R), and a
fragmentation penalty gamma * (chunks / m)^beta (chunks: runs of aligned words in the same order in both) gives
METEOR = F (1 - penalty), with alpha = 0.9, beta = 3, gamma = 0.5; with several references, the best. The result is
the mean over captions. Captions and references are tokenized first as the toolkit does
(lower-cased, split as its PTB tokenizer would, approximated by a regex; punctuation dropped).

This is NLTK's METEOR, not the Java Meteor 1.5 of the COCO caption toolkit (which adds paraphrase matches, other
parameters and its own tokenizer): the two differ, see the card. WordNet must be installed as NLTK data; the
repository's setup copies it from Debian's `wordnet-base` (`python -m recipes.metrics.wordnet_data`); nothing is
ever downloaded at run time.
SPICE is not provided: its scorer downloads Stanford CoreNLP at run time, which cannot happen offline.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per item.
    references (`list` of `list` of `str`): the reference captions of each item (one or more).

Returns:
    meteor (`float`): mean METEOR in [0, 1].

Examples:
    >>> meteor = evaluate.load("path/to/meteor")  # the folder holding this script
    >>> round(meteor.compute(predictions=["a red dog"], references=[["a red dog"]])["meteor"], 4)
    0.9815
"""

_CITATION = """\
@inproceedings{banerjee2005meteor,
  title={{METEOR}: An Automatic Metric for {MT} Evaluation with Improved Correlation with Human Judgments},
  author={Banerjee, Satanjeev and Lavie, Alon},
  booktitle={Proceedings of the ACL Workshop on Intrinsic and Extrinsic Evaluation Measures for MT},
  pages={65--72},
  year={2005}
}
"""

ALPHA, BETA, GAMMA = 0.9, 3.0, 0.5

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


def wordnet():
    """NLTK's WordNet reader, from the local NLTK data only (never `nltk.download`)."""
    from nltk.corpus import wordnet as reader

    try:
        reader.ensure_loaded()
    except LookupError as error:
        raise LookupError(
            "METEOR needs WordNet as NLTK data, and it is not installed. Install it offline from Debian with "
            "`apt-get install wordnet-base wordnet-sense-index` and `python -m recipes.metrics.wordnet_data "
            "--nltk_data .venv/nltk_data` (`make setup` does both)."
        ) from error
    return reader


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Meteor(evaluate.Metric):
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
        from nltk.translate.meteor_score import meteor_score

        check_inputs(predictions, references)
        reader = wordnet()
        scores = [
            meteor_score(
                [tokenize(r) for r in refs], tokenize(p), alpha=ALPHA, beta=BETA, gamma=GAMMA, wordnet=reader
            )
            if tokenize(p)
            else 0.0
            for p, refs in zip(predictions, references)
        ]
        return {"meteor": sum(scores) / len(scores)}
