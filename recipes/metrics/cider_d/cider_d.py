"""CIDEr-D as the COCO caption toolkit computes it (tf-idf n-gram cosine, clipped, length-penalised, x10)."""

import math
import re
from collections import Counter, defaultdict

import datasets
import evaluate

_DESCRIPTION = """\
CIDEr-D (Vedantam et al., 2015) as the COCO caption evaluation toolkit (pycocoevalcap, `cider/cider_scorer.py`,
whose `Cider` is the D variant) computes it. Each caption and reference becomes, for n = 1..4, a vector of its
n-grams weighted by tf-idf: the n-gram's count times log(N) - log(max(1, df)), where N is the number of items
scored together and df the number of items whose references contain the n-gram (document frequencies come from the
references of the call, so a score depends on the corpus it is computed with). For each reference, the n-gram
similarity is sum_g min(c_g, r_g) r_g / (|c| |r|) (the caption's weights clipped by the reference's: repeating an
n-gram does not pay), times the Gaussian length penalty exp(-(l_c - l_r)^2 / (2 * 6^2)); an item's score is the
mean over n and over its references, times 10, and CIDEr-D the mean over items. As in the toolkit, the lengths in
the penalty are the numbers of bigrams (words - 1). With a single item, log(N) = 0 and every weight is 0: CIDEr-D
is only meaningful over a corpus (the toolkit gives 0 too). Captions and references are tokenized first as the toolkit does
(lower-cased, split as its PTB tokenizer would, approximated by a regex; punctuation dropped).
SPICE is not provided: its scorer downloads Stanford CoreNLP at run time, which cannot happen offline.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per item.
    references (`list` of `list` of `str`): the reference captions of each item (one or more); they also give the
        document frequencies.

Returns:
    cider_d (`float`): mean CIDEr-D over items (0 to 10 in practice).

Examples:
    >>> cider_d = evaluate.load("path/to/cider_d")  # the folder holding this script
    >>> result = cider_d.compute(predictions=["a red dog", "a cat"], references=[["a red dog"], ["a black cat"]])
    >>> round(result["cider_d"], 4)  # (7.5 + 10 * (1 / sqrt(2)) / 4 * exp(-1 / 72)) / 2
    4.6217
"""

_CITATION = """\
@inproceedings{vedantam2015cider,
  title={{CIDEr}: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={Proceedings of CVPR},
  pages={4566--4575},
  year={2015}
}
"""

MAX_N, SIGMA = 4, 6.0

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


def ngram_counts(words: list[str]) -> Counter:
    return Counter(tuple(words[i : i + n]) for n in range(1, MAX_N + 1) for i in range(len(words) - n + 1))


def tfidf(counts: Counter, document_frequency: dict, log_n: float):
    """Per n: the tf-idf vector, its norm, and the length (the number of bigrams, as the toolkit counts it)."""
    vectors = [dict() for _ in range(MAX_N)]
    norms = [0.0] * MAX_N
    length = 0
    for gram, count in counts.items():
        n = len(gram) - 1
        weight = count * (log_n - math.log(max(1.0, document_frequency.get(gram, 0.0))))
        vectors[n][gram] = weight
        norms[n] += weight**2
        if n == 1:
            length += count
    return vectors, [math.sqrt(x) for x in norms], length


def cider_d_scores(predictions: list[list[str]], references: list[list[list[str]]]) -> list[float]:
    """The CIDEr-D of every item (tokenized captions and references)."""
    document_frequency = defaultdict(float)
    reference_counts = [[ngram_counts(r) for r in refs] for refs in references]
    for counts in reference_counts:
        for gram in set(g for c in counts for g in c):
            document_frequency[gram] += 1
    log_n = math.log(float(len(references)))
    scores = []
    for words, counts in zip(predictions, reference_counts):
        vectors, norms, length = tfidf(ngram_counts(words), document_frequency, log_n)
        total = [0.0] * MAX_N
        for ref in counts:
            ref_vectors, ref_norms, ref_length = tfidf(ref, document_frequency, log_n)
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * SIGMA**2))
            for n in range(MAX_N):
                value = sum(
                    min(w, ref_vectors[n].get(g, 0.0)) * ref_vectors[n].get(g, 0.0)
                    for g, w in vectors[n].items()
                )
                if norms[n] != 0 and ref_norms[n] != 0:
                    value /= norms[n] * ref_norms[n]
                total[n] += value * penalty
        scores.append(sum(total) / MAX_N / len(counts) * 10.0)
    return scores


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CiderD(evaluate.Metric):
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
        scores = cider_d_scores(
            [tokenize(p) for p in predictions], [[tokenize(r) for r in refs] for refs in references]
        )
        return {"cider_d": sum(scores) / len(scores)}
