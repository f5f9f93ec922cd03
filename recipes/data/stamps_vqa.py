"""Build a visual question answering (VQA) dataset from the Tux Paint stamps dataset.

`recipes/data/stamps.py` builds the stamps `DatasetDict` (cartoon images of things with an English
description, split ``train`` / ``validation`` / ``test`` so that no test description is in ``train``). This
module derives, deterministically and offline, a VQA v2-style dataset from it, saved with ``save_to_disk``:

- the three VQA answer types: ``yes/no`` ("Is this an animal?", "Is there a lion in the picture?"), ``number``
  ("How many lions are there?" on scenes composited from 1-6 copies of a stamp, plus distractors) and
  ``other`` ("What is this?", "What colour is the background?");
- ten "annotators'" answers per question, so that VQA soft scores (`soft_scores`) are meaningful;
- each split made only from the stamps of the same split of the source (distractors included), so test
  descriptions never reach ``train``.

Usage::

    python -m recipes.data.stamps_vqa --stamps outputs/data/stamps --output_dir outputs/data/stamps_vqa
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from recipes.data.stamps import StampsBuildError, normalize_description
from recipes.data.vqa import (
    NUMBER_WORDS,
    answer_vocabulary,
    normalize_answer,
    out_of_vocabulary_share,
)

logger = logging.getLogger(__name__)

BUILDER_VERSION = "1.0.0"
FINGERPRINT_FILE = "build_fingerprint.json"
IMAGE_SIZE = 224
SPLITS = ("train", "validation", "test")
SOURCE_COLUMNS = ("id", "category", "text", "image")
NUM_ANSWERS = 10
MAX_COUNT = 6
MAX_DISTRACTORS = 3
ANSWER_TYPES = ("yes/no", "number", "other")
QUESTION_TYPES = ("is_animal", "is_there", "how_many", "what_is", "background_colour")
#: Background colours of the composited scenes: name -> RGB.
BACKGROUND_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 210),
    "yellow": (245, 215, 40),
    "white": (255, 255, 255),
    "black": (20, 20, 20),
    "orange": (245, 140, 30),
    "purple": (130, 50, 160),
}
#: A background is redrawn when it is closer than this (RGB distance) to the mean colour of the stamp.
MIN_BACKGROUND_CONTRAST = 90.0
#: Pixels at least this bright in every channel and connected to the border are the stamp's (flattened)
#: background.
WHITE_LEVEL = 235

# ----------------------------------------------------------------------------------------------------
# Noun rules

#: Stamps whose description does not name the pictured thing (letters, digits, coins, notes, chess pieces,
#: faces, the message of a road sign): no question about their noun is asked.
NO_NOUN_PREFIXES = (
    "symbols/alphabets/",
    "symbols/math/",
    "symbols/money/",
    "symbols/faces/",
    "symbols/music/",
    "symbols/chess/",
    "town/roadsigns/",
)
#: Stamps never mirrored in the scenes (letters, digits and signs read wrong mirrored).
NOT_MIRRORED = ("symbols/", "town/roadsigns/")
_CLAUSE_END = re.compile(r"[.!?;:()\u2014\u2013\u2026]|\s-\s")
_QUOTES = re.compile(r"[\"\u201c\u201d]|(?<!\w)'|'(?!\w)")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['-][A-Za-z0-9]+)*")
#: One leading word that is not part of the noun phrase; the plural ones make the head noun plural.
DETERMINERS = frozenset({"a", "an", "the", "some", "another", "our", "two", "three", "four", "five", "six"})
PLURAL_DETERMINERS = frozenset({"some", "two", "three", "four", "five", "six"})
#: Determiners of one countable thing: "How many ...?" and "Is there a ...?" are asked about these.
SINGULAR_DETERMINERS = frozenset({"a", "an", "another"})
#: "A pair of glasses", "a head of lettuce": the noun after "of" is the thing. Other "X of Y" keep X
#: ("a cup of coffee" -> cup, "the house of the hunter" -> house).
OF_TRANSPARENT = frozenset(
    {"pair", "couple", "bunch", "cluster", "string", "head", "slice", "quarter", "piece", "plant", "baby"}
)
#: Words that end the noun phrase: prepositions, conjunctions and the verbs of the descriptions.
PHRASE_END = frozenset(
    {
        "with", "in", "inside", "for", "from", "by", "on", "at", "to", "into", "as", "like", "near", "under",
        "over", "of", "and", "or", "but", "called", "that", "which", "who", "is", "are", "was", "were", "has",
        "have", "lets", "means", "carries", "stands", "can", "also", "worn", "used", "dancing", "playing",
        "making", "hatched", "covered", "resembles", "sliced", "said", "eaten", "carry",
    }
)  # fmt: skip
#: Heads that name no thing ("An important part of Hanukkah is ..."): the description is not used.
NOT_THINGS = frozenset({"part", "kind", "type", "sort", "symbol", "thing", "this", "it"})
#: Words that name how big or how many, not what: never the modifier in the longer answer ("brown hen").
NOT_MODIFIERS = frozenset({"very", "little", "big", "small", "large", "huge", "one", "two", "tiny"})
COLOUR_WORDS = frozenset(
    {
        "red", "green", "blue", "yellow", "white", "black", "orange", "purple", "pink", "brown", "grey",
        "silver",
    }
)  # fmt: skip
#: Two-word nouns kept whole (the head alone would name something else, or be too vague).
COMPOUND_NOUNS = frozenset(
    {
        "sea lion", "teddy bear", "guinea fowl", "fire truck", "palm tree", "christmas tree", "candy cane",
        "washing machine", "vacuum cleaner", "cement mixer", "police officer", "compact disc", "easter egg",
        "party hat", "party horn", "tennis ball", "soccer ball", "cricket ball", "tennis racket",
        "post box", "paw print", "clock face", "sail boat", "race car", "sports car", "school bus",
        "traffic cone", "light bulb", "golf ball", "bow tie", "top hat", "hard hat", "drum kit",
        "garbage can", "trash can",
    }
)  # fmt: skip
#: The broader word a few annotators answer to "What is this?": by the head noun first ...
BROADER_BY_NOUN = {"teddy bear": "toy", "sea lion": "animal", "guinea fowl": "bird"}
#: ... then by the end of the noun ("blackbird" -> bird, "fire truck" -> truck) ...
BROADER_BY_SUFFIX = (
    "bird", "fish", "truck", "car", "ball", "boat", "tree", "hat", "shirt", "bus", "guitar", "drum", "goat",
    "cake", "tower", "flag", "wrench", "hammer", "camera", "printer", "thermometer",
)  # fmt: skip
#: ... then by the folder of the stamp (longest prefix first; only folders where the word is true of all).
BROADER_BY_FOLDER = {
    "animals/birds/": "bird",
    "animals/": "animal",
    "food/fruit/": "fruit",
    "food/vegetables/": "vegetable",
    "food/": "food",
    "plants/flowers/": "flower",
    "plants/": "plant",
    "hobbies/music/": "instrument",
    "clothes/hats/": "hat",
    "household/tools/": "tool",
    "town/houses/": "building",
    "vehicles/auto/": "vehicle",
    "vehicles/construction/": "vehicle",
    "vehicles/masstransit/": "vehicle",
}
#: Nouns that must not be the "no" of each other (a rabbit pictured as a bunny is still a rabbit).
SYNONYMS = (
    frozenset({"rabbit", "bunny", "hare"}),
    frozenset({"gravestone", "headstone", "tombstone", "grave", "marker", "stone", "monument"}),
    frozenset({"cat", "kitten"}),
    frozenset({"dog", "puppy"}),
    frozenset({"hen", "chicken", "rooster", "chick"}),
    frozenset({"truck", "lorry"}),
    frozenset({"airplane", "plane", "jet"}),
    frozenset({"bicycle", "bike", "tricycle"}),
    frozenset({"cup", "mug"}),
    frozenset({"camera", "webcam"}),
    frozenset({"boat", "ship", "sailboat", "tugboat"}),
    frozenset({"pot", "pan", "cooker"}),
    frozenset({"doll", "toy"}),
    frozenset({"telephone", "phone"}),
    frozenset({"computer", "laptop", "monitor"}),
    frozenset({"bin", "can", "box"}),
    frozenset({"house", "home", "cottage", "building"}),
    frozenset({"castle", "fort", "fortress", "tower"}),
)
#: Animals outside the ``animals`` folder never get the answer "no" to "Is this an animal?".
ANIMAL_WORDS = frozenset(
    {
        "bat", "bear", "bird", "bluebird", "bunny", "butterfly", "cat", "chick", "cow", "dog", "duck", "fish",
        "horse", "lion", "mouse", "penguin", "rabbit", "reindeer", "snail", "spider", "tux", "turkey",
    }
)  # fmt: skip
_IRREGULAR_PLURALS = {
    "mouse": "mice", "goose": "geese", "man": "men", "woman": "women", "person": "people", "tooth": "teeth",
    "foot": "feet", "child": "children", "sheep": "sheep", "deer": "deer", "fish": "fish", "bison": "bison",
    "moose": "moose", "shrimp": "shrimp", "series": "series", "knife": "knives", "leaf": "leaves",
    "wolf": "wolves", "loaf": "loaves", "scarf": "scarves", "shelf": "shelves", "calf": "calves",
    "tomato": "tomatoes", "potato": "potatoes", "reindeer": "reindeer", "volcano": "volcanoes",
    "hero": "heroes", "cactus": "cacti",
}  # fmt: skip


def _stable_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def _rng(*key: object) -> np.random.Generator:
    """A generator seeded by a hash of ``key``: every question draws from its own, never from global state."""
    return np.random.default_rng(_stable_hash("/".join(map(str, key))))


# ----------------------------------------------------------------------------------------------------
# Nouns


@dataclass(frozen=True)
class Noun:
    """What a description names: the head noun (``blackbird``), whether it is plural, whether it is one
    countable thing (the description starts with "a"/"an": "How many ...?" and "Is there a ...?" make sense),
    the broader word a few annotators answer (``bird``) and the head with its modifier (``brown hen``)."""

    noun: str
    plural: bool
    countable: bool
    broader: str | None
    phrase: str


def pluralize(noun: str) -> str:
    """English plural of the last word of ``noun`` by simple rules (approximate for rare words)."""
    *front, last = noun.split(" ")
    if last in _IRREGULAR_PLURALS:
        plural = _IRREGULAR_PLURALS[last]
    elif last.endswith("man") and last not in ("human", "german", "shaman"):
        plural = last[:-3] + "men"  # snowman, fireman
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return " ".join([*front, plural])


def article(noun: str) -> str:
    """``a`` or ``an`` by the first letter (good enough for the stamps' nouns)."""
    return "an" if noun[:1] in "aeiou" else "a"


def broader_word(noun: str, stamp_id: str) -> str | None:
    """The category-level word for ``noun`` ("blackbird" -> bird, "fire truck" -> truck, a lion -> animal)."""
    if noun in BROADER_BY_NOUN:
        return BROADER_BY_NOUN[noun]
    last = noun.split(" ")[-1]
    for suffix in BROADER_BY_SUFFIX:
        compound_head = " " in noun and last == suffix  # "fire truck" -> truck
        word_end = last.endswith(suffix) and len(last) - len(suffix) >= 3  # "blackbird" -> bird
        if compound_head or word_end:
            return suffix
    for prefix in sorted(BROADER_BY_FOLDER, key=len, reverse=True):
        if stamp_id.startswith(prefix):
            word = BROADER_BY_FOLDER[prefix]
            return None if word == noun else word
    return None


def head_noun(text: str, stamp_id: str = "") -> Noun | None:
    """The head noun of a stamp's description, or `None` where the description names no thing.

    The rule: take the first clause (up to ``. ! ? ; : ( —``), without quotes; drop one leading determiner
    (``a``, ``an``, ``the``, ``some``, a number word); in "X of Y" take Y when X is a quantity or part word
    (``pair``, ``bunch``, ``head``, ``slice``, ``baby``, ...: "A pair of glasses" -> ``glasses``, "A quarter
    of pizza" -> ``pizza``), else X ("A cup of coffee" -> ``cup``); end the phrase at a preposition,
    conjunction or verb ("A spider dancing with a fly" -> ``spider``; "and" between colours is kept); the head
    is the last word (hyphenated words whole: ``jack o lantern``), or the last two where they form a listed
    compound noun (``fire truck``, ``sea lion``).

    `None` for: stamps under `NO_NOUN_PREFIXES` (letters, digits, coins, road signs, ...); a capitalised head
    after the first word (a proper name: "A Silver Gull", "Santa Claus"); heads in `NOT_THINGS`; descriptions
    without a determiner unless the first clause is a plain noun phrase ending in ``.`` ("Knitting." yes;
    "Boom!!!" and "Nun stands for ..." no).
    """
    return _head_noun(text, stamp_id, inner=False)


def _head_noun(text: str, stamp_id: str, *, inner: bool) -> Noun | None:
    if stamp_id.startswith(NO_NOUN_PREFIXES):
        return None
    text = _QUOTES.sub("", text.replace("\u2019", "'").replace("\u2018", "'")).strip()
    match = _CLAUSE_END.search(text)
    clause, end = (text[: match.start()], match.group()) if match else (text, "")
    raw = _WORD.findall(clause)
    if not raw:
        return None
    words = [word.lower() for word in raw]
    start = 1 if len(words) > 1 and words[0] in DETERMINERS else 0
    determiner = words[0] if start else None
    stop = len(words)
    for j in range(start + 1, len(words)):
        word = words[j]
        if word == "of" and words[j - 1] in OF_TRANSPARENT and j + 1 < len(words):
            thing = _head_noun(" ".join(raw[j + 1 :]), stamp_id, inner=True)
            if thing is None:
                return None
            plural = thing.plural or words[j - 1] in ("pair", "couple")
            countable = (
                determiner in SINGULAR_DETERMINERS and not plural and words[j - 1] in ("head", "plant")
            )
            return Noun(thing.noun, plural, countable, thing.broader, thing.phrase)
        if word in ("and", "or") and words[j - 1] in COLOUR_WORDS:
            continue  # "a blue and yellow flag"
        if word in PHRASE_END and not (word == "can" and j == len(words) - 1):
            stop = j
            break
    if determiner is None and not inner and (stop < len(words) or end not in (".", "")):
        return None
    phrase_raw, phrase = raw[start:stop], words[start:stop]
    if not phrase or not re.fullmatch(r"[a-z][a-z'-]+", phrase[-1]) or phrase[-1] in NOT_THINGS:
        return None
    if phrase_raw[-1][0].isupper() and (start or stop > 1):
        return None  # a proper name
    head = [w.replace("'", "").replace("-", " ") for w in phrase]
    noun = " ".join(head[-2:]) if " ".join(head[-2:]) in COMPOUND_NOUNS else head[-1]
    plural = determiner in PLURAL_DETERMINERS or (
        determiner is None and noun.endswith("s") and not noun.endswith(("ss", "us", "is"))
    )
    size = len(noun.split(" ")) if " ".join(head[-2:]) in COMPOUND_NOUNS else 1
    modifier = head[-size - 1] if len(head) > size else ""
    if modifier in NOT_MODIFIERS or modifier in DETERMINERS or len(modifier) < 3 or not modifier[0].isalpha():
        modifier = ""
    countable = determiner in SINGULAR_DETERMINERS and not plural
    return Noun(noun, plural, countable, broader_word(noun, stamp_id), f"{modifier} {noun}".strip())


# ----------------------------------------------------------------------------------------------------
# Answers


def _most_common(answers: Sequence[str]) -> str:
    counts = Counter(normalize_answer(answer) for answer in answers)
    return min(counts, key=lambda answer: (-counts[answer], answer))


# ----------------------------------------------------------------------------------------------------
# Images


def cutout(image: Image.Image) -> Image.Image:
    """The stamp as RGBA, cropped to the drawing.

    An image with transparency keeps its alpha. An opaque one (the stamps dataset flattens every stamp on
    white) gets one: the near-white region connected to the border is transparent, and the pixels next to it
    are un-mixed from white (alpha from how far they are from white), so edges do not leave a white fringe.
    """
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if np.asarray(rgba)[..., 3].min() < 255:
            box = rgba.getchannel("A").getbbox()
            return rgba.crop(box) if box else rgba
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)
    near_white = (rgb >= WHITE_LEVEL).all(axis=2)
    labels, _ = ndimage.label(near_white)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, border[border > 0])
    if background.all() or not background.any():
        return image.convert("RGBA")
    alpha = np.where(background, 0.0, 1.0)
    edge = ndimage.binary_dilation(background, iterations=2) & ~background
    opacity = np.clip((255.0 - rgb.min(axis=2)) / 80.0, 0.0, 1.0)
    alpha[edge] = opacity[edge]
    safe = np.maximum(alpha, 1e-3)[..., None]
    colour = np.where(edge[..., None], (rgb - (1.0 - alpha[..., None]) * 255.0) / safe, rgb)
    pixels = np.concatenate([np.clip(colour, 0, 255), alpha[..., None] * 255.0], axis=2)
    rgba = Image.fromarray(np.round(pixels).astype(np.uint8), "RGBA")
    box = rgba.getchannel("A").getbbox()
    return rgba.crop(box) if box else rgba


def mean_colour(stamp: Image.Image) -> tuple[float, float, float]:
    """Alpha-weighted mean RGB of a `cutout`."""
    pixels = np.asarray(stamp.convert("RGBA")).astype(np.float64)
    weights = pixels[..., 3:] / 255.0
    total = max(weights.sum(), 1e-6)
    red, green, blue = (pixels[..., :3] * weights).sum(axis=(0, 1)) / total
    return float(red), float(green), float(blue)


def _resize_rgba(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    # Premultiplied alpha, so that transparent pixels do not bleed their colour into the edges.
    return image.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")


@dataclass(frozen=True)
class Placement:
    """One pasted copy: ``index`` of the scene's object (0 = the counted stamp) and its ``box``, as
    ``(x0, y0, x1, y1)``."""

    index: int
    box: tuple[int, int, int, int]


def compose_scene(
    objects: Sequence[tuple[Image.Image, int]],
    background: tuple[int, int, int],
    rng: np.random.Generator,
    size: int = IMAGE_SIZE,
    gap: int = 3,
    mirror: Sequence[bool] | None = None,
) -> tuple[Image.Image, list[Placement]]:
    """Paste ``count`` copies of each ``(cutout, count)`` at random sizes, positions and (where ``mirror``
    allows it, by default everywhere) left-right flips on a plain ``background``; boxes never overlap (``gap``
    pixels apart), so every copy is fully visible and countable.

    Returns the RGB scene and where each copy went (``len(placements) == sum of counts``).
    """
    mirror = [True] * len(objects) if mirror is None else list(mirror)
    copies = [index for index, (_, count) in enumerate(objects) for _ in range(count)]
    copies = [copies[i] for i in rng.permutation(len(copies))]
    canvas = Image.new("RGBA", (size, size), (*background, 255))
    if not copies:
        return canvas.convert("RGB"), []
    longest = min(0.5 * size, 0.9 * size / math.ceil(math.sqrt(len(copies))))
    for attempt in range(40):
        scale = 0.92**attempt
        placed: list[tuple[int, tuple[int, int, int, int], bool]] = []
        for index in copies:
            stamp = objects[index][0]
            side = rng.uniform(0.6, 1.0) * longest * scale
            ratio = side / max(stamp.size)
            width, height = max(4, round(stamp.width * ratio)), max(4, round(stamp.height * ratio))
            for _ in range(200):
                x0, y0 = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
                box = (x0, y0, x0 + width, y0 + height)
                if all(
                    box[0] >= other[2] + gap
                    or other[0] >= box[2] + gap
                    or box[1] >= other[3] + gap
                    or other[1] >= box[3] + gap
                    for _, other, _ in placed
                ):
                    placed.append((index, box, bool(rng.integers(0, 2)) and mirror[index]))
                    break
            else:
                break
        if len(placed) == len(copies):
            break
    else:
        raise RuntimeError(f"Cannot place {len(copies)} stamps on a {size}x{size} scene.")
    for index, box, flip in placed:
        pasted = _resize_rgba(objects[index][0], (box[2] - box[0], box[3] - box[1]))
        if flip:
            pasted = pasted.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        canvas.alpha_composite(pasted, dest=(box[0], box[1]))
    return canvas.convert("RGB"), [Placement(index, box) for index, box, _ in placed]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _stamp_png(data: bytes) -> bytes:
    """The stamp's own image as a 224x224 RGB PNG: kept as is when it already is one, else flattened on white
    and letterboxed like the stamps dataset does."""
    from recipes.data.stamps import _letterbox_png

    with Image.open(io.BytesIO(data)) as image:
        if image.format == "PNG" and image.mode == "RGB" and image.size == (IMAGE_SIZE, IMAGE_SIZE):
            return data
        image.load()
        return _letterbox_png(image)


# ----------------------------------------------------------------------------------------------------
# Questions


@dataclass
class _Stamp:
    id: str
    category: str
    text: str
    image: bytes
    noun: Noun | None
    words: frozenset[str] = frozenset()
    _cutout: Image.Image | None = None

    def cut(self) -> Image.Image:
        if self._cutout is None:
            with Image.open(io.BytesIO(self.image)) as image:
                image.load()
                self._cutout = cutout(image)
        return self._cutout


@dataclass(frozen=True)
class _Scene:
    key: str
    stamp_id: str
    count: int
    distractor_id: str | None
    distractor_count: int
    background: str


@dataclass
class _Question:
    question_id: str
    question: str
    answers: list[str]
    answer_type: str
    question_type: str
    stamp: _Stamp
    scene: _Scene | None = None


def _words(text: str, stamp_id: str) -> frozenset[str]:
    """Every word of a description and id, with naive singulars: what a stamp may show besides its head
    noun."""
    words = set(re.findall(r"[a-z]+", normalize_description(text))) | set(
        re.findall(r"[a-z]+", stamp_id.lower())
    )
    return frozenset(
        words | {w[:-1] for w in words if w.endswith("s")} | {w[:-2] for w in words if w.endswith("es")}
    )


def _same_kind(a: str, b: str) -> bool:
    return any(a in group and b in group for group in SYNONYMS)


def _confusable(target: _Stamp, other: _Stamp) -> bool:
    """Whether ``other`` might be taken for (or show) ``target``'s noun, or the other way round: then
    ``other`` is neither a distractor in ``target``'s scenes nor the noun of a "no" about ``target``."""
    if normalize_description(target.text) == normalize_description(other.text):
        return True
    nouns = [stamp.noun for stamp in (target, other) if stamp.noun is not None]
    for noun, stamp in ((target.noun, other), (other.noun, target)):
        if noun is not None and set(noun.noun.split(" ")) & stamp.words:
            return True
    if len(nouns) < 2:
        return False
    a, b = nouns
    last_a, last_b = a.noun.split(" ")[-1], b.noun.split(" ")[-1]
    return (
        a.noun == b.noun
        or last_a.endswith(last_b)
        or last_b.endswith(last_a)
        or _same_kind(last_a, last_b)
        or a.broader in (b.noun, last_b)
        or b.broader in (a.noun, last_a)
    )


def _is_animal_questions(stamps: Sequence[_Stamp], split: str, seed: int) -> list[_Question]:
    """Asks "Is this an animal?" about every animal stamp (not toys) and about as many other stamps (never
    ones that mention an animal), chosen by a hash: as many yes as no."""
    animal_words = ANIMAL_WORDS | {s.noun.noun for s in stamps if s.noun and s.category == "animals"}
    animal_words |= {pluralize(word) for word in animal_words}
    yes = [s for s in stamps if s.category == "animals" and not {"toy", "toys", "teddy"} & s.words]
    no = [s for s in stamps if s.category != "animals" and not animal_words & s.words]
    n = min(len(yes), len(no))
    pick = {
        s.id
        for group in (yes, no)
        for s in sorted(group, key=lambda s: _stable_hash(f"{seed}/{split}/is_animal/{s.id}"))[:n]
    }
    return [
        _Question(
            question_id=f"{s.id}#is_animal",
            question="Is this an animal?",
            answers=["yes" if s.category == "animals" else "no"] * NUM_ANSWERS,
            answer_type="yes/no",
            question_type="is_animal",
            stamp=s,
        )
        for s in stamps
        if s.id in pick
    ]


def _is_there_question(noun: str, plural: bool) -> str:
    if plural:
        return f"Are there {noun} in the picture?"
    return f"Is there {article(noun)} {noun} in the picture?"


def _stamp_questions(stamp: _Stamp, negatives: Sequence[_Stamp], split: str, seed: int) -> list[_Question]:
    """Asks "What is this?" and a pair of "Is there a ...?" (its own noun: yes; another stamp's: no)."""
    noun = stamp.noun
    if noun is None:
        return []
    rng = _rng(seed, split, stamp.id, "what_is")
    minority = noun.broader or (noun.phrase if noun.phrase != noun.noun else None)
    n_minority = int(rng.integers(1, 4)) if minority else 0
    answers = [noun.noun] * (NUM_ANSWERS - n_minority) + [minority] * n_minority
    answers = [answers[i] for i in rng.permutation(NUM_ANSWERS)]
    what = "What are these?" if noun.plural else "What is this?"
    questions = [_Question(f"{stamp.id}#what_is", what, answers, "other", "what_is", stamp)]
    if not (noun.countable or noun.plural):
        return questions
    order = _rng(seed, split, stamp.id, "is_there").permutation(len(negatives))
    other = next((negatives[i] for i in order if not _confusable(stamp, negatives[i])), None)
    if other is None:
        return questions  # no "no" for this stamp: no "yes" either, to keep the balance
    assert other.noun is not None
    for answer, asked, plural in (("yes", noun.noun, noun.plural), ("no", other.noun.noun, False)):
        questions.append(
            _Question(
                question_id=f"{stamp.id}#is_there/{answer}",
                question=_is_there_question(asked, plural),
                answers=[answer] * NUM_ANSWERS,
                answer_type="yes/no",
                question_type="is_there",
                stamp=stamp,
            )
        )
    return questions


def _background(stamp: _Stamp, rng: np.random.Generator) -> str:
    """A background colour drawn by ``rng``, redrawn while too close to the stamp's mean colour."""
    names = list(BACKGROUND_COLOURS)
    order = [names[i] for i in rng.permutation(len(names))]
    mean = np.array(mean_colour(stamp.cut()))
    distance = {name: float(np.linalg.norm(mean - BACKGROUND_COLOURS[name])) for name in order}
    return next(
        (name for name in order if distance[name] >= MIN_BACKGROUND_CONTRAST), max(order, key=distance.get)
    )


def _scene_questions(
    stamp: _Stamp,
    others: Sequence[_Stamp],
    split: str,
    *,
    seed: int,
    scenes_per_stamp: int,
    background_share: float,
) -> list[_Question]:
    """Scenes of 1-6 copies of ``stamp`` and 0-3 copies of a stamp of another category: "How many ...?" where
    the stamp names one countable thing, and "What colour is the background?" on a share of the scenes (on the
    one scene of a stamp without a countable noun)."""
    countable = stamp.noun is not None and stamp.noun.countable
    questions = []
    for i in range(scenes_per_stamp if countable else 1):
        rng = _rng(seed, split, stamp.id, "scene", i)
        count = int(rng.integers(1, MAX_COUNT + 1))
        candidates = [o for o in others if o.category != stamp.category]
        distractor, distractor_count = None, 0
        if candidates:
            order = rng.permutation(len(candidates))
            distractor = next((candidates[j] for j in order if not _confusable(stamp, candidates[j])), None)
            distractor_count = int(rng.integers(0, MAX_DISTRACTORS + 1)) if distractor else 0
        background = _background(stamp, rng)
        scene = _Scene(
            key=f"{stamp.id}#scene{i}",
            stamp_id=stamp.id,
            count=count,
            distractor_id=distractor.id if distractor_count else None,
            distractor_count=distractor_count,
            background=background,
        )
        if countable:
            assert stamp.noun is not None
            answers = [str(count)] * NUM_ANSWERS
            if rng.random() < 0.5:  # one annotator writes the number as a word
                answers[int(rng.integers(0, NUM_ANSWERS))] = NUMBER_WORDS[count]
            questions.append(
                _Question(
                    question_id=f"{scene.key}/how_many",
                    question=f"How many {pluralize(stamp.noun.noun)} are there?",
                    answers=answers,
                    answer_type="number",
                    question_type="how_many",
                    stamp=stamp,
                    scene=scene,
                )
            )
        if not countable or rng.random() < background_share:
            questions.append(
                _Question(
                    question_id=f"{scene.key}/background_colour",
                    question="What colour is the background?",
                    answers=[background] * NUM_ANSWERS,
                    answer_type="other",
                    question_type="background_colour",
                    stamp=stamp,
                    scene=scene,
                )
            )
    return questions


def _split_questions(
    stamps: Sequence[_Stamp], split: str, *, seed: int, scenes_per_stamp: int, background_share: float
) -> list[_Question]:
    """Every question of one split, from that split's stamps only (distractors and "no" nouns included)."""
    stamps = sorted(stamps, key=lambda s: s.id)
    negatives = [s for s in stamps if s.noun is not None and s.noun.countable]
    by_stamp: dict[str, list[_Question]] = {s.id: [] for s in stamps}
    for question in _is_animal_questions(stamps, split, seed):
        by_stamp[question.stamp.id].append(question)
    for stamp in stamps:
        by_stamp[stamp.id] += _stamp_questions(stamp, negatives, split, seed)
        by_stamp[stamp.id] += _scene_questions(
            stamp,
            stamps,
            split,
            seed=seed,
            scenes_per_stamp=scenes_per_stamp,
            background_share=background_share,
        )
    return [question for stamp in stamps for question in by_stamp[stamp.id]]


def _render_scene(
    scene: _Scene, stamps: Mapping[str, _Stamp], seed: int
) -> tuple[Image.Image, list[Placement]]:
    """Draw ``scene`` (deterministic: its own generator)."""
    drawn = [(stamps[scene.stamp_id], scene.count)]
    if scene.distractor_id is not None:
        drawn.append((stamps[scene.distractor_id], scene.distractor_count))
    image, placements = compose_scene(
        [(stamp.cut(), count) for stamp, count in drawn],
        BACKGROUND_COLOURS[scene.background],
        _rng(seed, scene.key, "draw"),
        mirror=[not stamp.id.startswith(NOT_MIRRORED) for stamp, _ in drawn],
    )
    pasted = Counter(p.index for p in placements)
    if pasted[0] != scene.count or pasted[1] != scene.distractor_count:
        raise RuntimeError(f"Scene {scene.key} holds {dict(pasted)} copies, not {scene.count}.")
    return image, placements


# ----------------------------------------------------------------------------------------------------
# Build


def vqa_features() -> datasets.Features:
    """Features shared by every split."""
    return datasets.Features(
        {
            "question_id": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answers": datasets.List(datasets.Value("string")),
            "multiple_choice_answer": datasets.Value("string"),
            "answer_type": datasets.Value("string"),
            "question_type": datasets.Value("string"),
            "stamp_id": datasets.Value("string"),
            "category": datasets.Value("string"),
        }
    )


def _load_source(stamps: str | os.PathLike | datasets.DatasetDict) -> datasets.DatasetDict:
    if isinstance(stamps, datasets.DatasetDict):
        source = stamps
    else:
        path = Path(stamps)
        if not (path / "dataset_dict.json").is_file():
            raise StampsBuildError(
                f"No stamps dataset at {path}: build it first with "
                f"`python -m recipes.data.stamps --output_dir {path}`, or pass its folder as --stamps.",
                path,
            )
        source = datasets.load_from_disk(str(path))
    missing_splits = [name for name in SPLITS if name not in source]
    if missing_splits:
        raise StampsBuildError(
            f"The stamps dataset has no split {', '.join(missing_splits)}: it needs {SPLITS}."
        )
    for name in SPLITS:
        missing = [column for column in SOURCE_COLUMNS if column not in source[name].column_names]
        if missing:
            raise StampsBuildError(f"The stamps split {name!r} lacks the column(s) {', '.join(missing)}.")
    return source


def _source_rows(split: datasets.Dataset) -> Iterable[dict[str, Any]]:
    columns = split.select_columns(list(SOURCE_COLUMNS)).cast_column("image", datasets.Image(decode=False))
    for row in columns:
        image = row["image"]
        if image is None or (image["bytes"] is None and not image["path"]):
            raise StampsBuildError(f"Stamp {row['id']!r} has no image.")
        data = image["bytes"] if image["bytes"] is not None else Path(image["path"]).read_bytes()
        yield {**row, "image": data}


def source_digest(source: datasets.DatasetDict) -> str:
    """SHA-256 of what the VQA dataset is made of: each split's ids, categories, descriptions and image
    bytes."""
    digest = hashlib.sha256()
    for name in SPLITS:
        for row in _source_rows(source[name]):
            digest.update(f"{name}\0{row['id']}\0{row['category']}\0{row['text']}\0".encode())
            digest.update(hashlib.sha256(row["image"]).digest())
    return digest.hexdigest()


def build_fingerprint(
    source: datasets.DatasetDict, *, seed: int, scenes_per_stamp: int, background_share: float
) -> dict[str, Any]:
    """Everything the output depends on: builder version, library versions, settings and the source
    content."""
    import PIL

    return {
        "builder_version": BUILDER_VERSION,
        "datasets_version": datasets.__version__,
        "pillow_version": PIL.__version__,
        "settings": {
            "seed": seed,
            "scenes_per_stamp": scenes_per_stamp,
            "background_share": background_share,
        },
        "source_sha256": source_digest(source),
    }


def _cached(output_dir: Path, fingerprint: dict[str, Any]) -> bool:
    path = output_dir / FINGERPRINT_FILE
    if not (path.is_file() and (output_dir / "dataset_dict.json").is_file()):
        return False
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return {k: v for k, v in saved.items() if k != "build"} == fingerprint


@dataclass
class BuildSummary:
    """Counts reported in the log and the dataset card."""

    stamps: dict[str, int] = field(default_factory=dict)
    with_noun: dict[str, int] = field(default_factory=dict)
    countable: dict[str, int] = field(default_factory=dict)
    answer_types: dict[str, Counter] = field(default_factory=dict)
    question_types: dict[str, Counter] = field(default_factory=dict)
    yes_no: dict[str, Counter] = field(default_factory=dict)
    counts: dict[str, Counter] = field(default_factory=dict)
    backgrounds: Counter = field(default_factory=Counter)
    vocabulary_size: int = 0
    oov_share: dict[str, float] = field(default_factory=dict)

    def log_lines(self) -> list[str]:
        lines = []
        for name in self.answer_types:
            types = ", ".join(f"{t} {self.answer_types[name][t]}" for t in ANSWER_TYPES)
            yes, no = self.yes_no[name]["yes"], self.yes_no[name]["no"]
            lines.append(
                f"{name}: {sum(self.answer_types[name].values())} questions from {self.stamps[name]} stamps "
                f"({types}); yes/no {yes}/{no}"
                + (
                    f"; answers outside the train vocabulary {self.oov_share[name]:.1%}"
                    if name != "train"
                    else ""
                )
            )
        return lines


def _split_rows(
    questions: Sequence[_Question], stamps: Mapping[str, _Stamp], seed: int, desc: str
) -> list[dict[str, Any]]:
    """Draw every image (each scene once, each stamp once) and lay out the rows."""
    scenes: dict[str, bytes] = {}
    singles: dict[str, bytes] = {}
    rows = []
    for question in tqdm(questions, desc=desc, unit="question"):
        if question.scene is not None:
            if question.scene.key not in scenes:
                scenes[question.scene.key] = _png(_render_scene(question.scene, stamps, seed)[0])
            image = scenes[question.scene.key]
        else:
            if question.stamp.id not in singles:
                singles[question.stamp.id] = _stamp_png(question.stamp.image)
            image = singles[question.stamp.id]
        rows.append(
            {
                "question_id": question.question_id,
                "image": {"bytes": image, "path": None},
                "question": question.question,
                "answers": list(question.answers),
                "multiple_choice_answer": _most_common(question.answers),
                "answer_type": question.answer_type,
                "question_type": question.question_type,
                "stamp_id": question.stamp.id,
                "category": question.stamp.category,
            }
        )
    return rows


def build_stamps_vqa_dataset(
    stamps: str | os.PathLike | datasets.DatasetDict,
    output_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    scenes_per_stamp: int = 2,
    background_share: float = 0.5,
    force: bool = False,
) -> datasets.DatasetDict:
    """Build (or reuse) the stamps VQA `DatasetDict`; with ``output_dir``, save it there and load it back.

    Args:
        stamps: The stamps `DatasetDict` (``recipes/data/stamps.py``) or the folder it was saved to. Only its
            ``train``, ``validation`` and ``test`` splits and their ``id``, ``category``, ``text`` and
            ``image`` columns are read.
        output_dir: Folder written with ``save_to_disk``, plus ``README.md`` and the cache fingerprint.
            `None`: build in memory, no cache.
        seed: Seeds every random choice (hashed with the question it is for).
        scenes_per_stamp: Composited scenes per stamp with a countable noun (one "How many ...?" each); stamps
            without one get a single scene. About 4.5 questions per stamp at 2.
        background_share: Share of the counting scenes that also get "What colour is the background?".
        force: Rebuild even when ``output_dir`` holds a build with the same fingerprint.
    """
    if scenes_per_stamp < 1:
        raise ValueError(f"scenes_per_stamp must be >= 1, got {scenes_per_stamp}.")
    if not 0.0 <= background_share <= 1.0:
        raise ValueError(f"background_share must be in [0, 1], got {background_share}.")
    start = time.perf_counter()
    source = _load_source(stamps)
    fingerprint = build_fingerprint(
        source, seed=seed, scenes_per_stamp=scenes_per_stamp, background_share=background_share
    )
    output = Path(output_dir) if output_dir is not None else None
    if output is not None:
        if not force and _cached(output, fingerprint):
            logger.info("Reusing the stamps VQA dataset in %s (same fingerprint).", output)
            return datasets.load_from_disk(str(output))
        if output.exists() and any(output.iterdir()) and not (output / FINGERPRINT_FILE).exists():
            raise StampsBuildError(
                f"{output} is not empty and holds no stamps VQA build: choose another output_dir.", output
            )

    summary = BuildSummary()
    splits: dict[str, list[dict[str, Any]]] = {}
    for name in SPLITS:
        stamps_of_split = {
            row["id"]: _Stamp(
                row["id"], row["category"], row["text"], row["image"], head_noun(row["text"], row["id"]),
                _words(row["text"], row["id"]),
            )
            for row in _source_rows(source[name])
        }  # fmt: skip
        questions = _split_questions(
            list(stamps_of_split.values()),
            name,
            seed=seed,
            scenes_per_stamp=scenes_per_stamp,
            background_share=background_share,
        )
        splits[name] = _split_rows(questions, stamps_of_split, seed, desc=f"Stamps VQA {name}")
        summary.stamps[name] = len(stamps_of_split)
        summary.with_noun[name] = sum(s.noun is not None for s in stamps_of_split.values())
        summary.countable[name] = sum(
            s.noun is not None and s.noun.countable for s in stamps_of_split.values()
        )
        summary.answer_types[name] = Counter(q.answer_type for q in questions)
        summary.question_types[name] = Counter(q.question_type for q in questions)
        summary.yes_no[name] = Counter(q.answers[0] for q in questions if q.answer_type == "yes/no")
        summary.counts[name] = Counter(
            int(_most_common(q.answers)) for q in questions if q.question_type == "how_many"
        )
        summary.backgrounds.update(q.answers[0] for q in questions if q.question_type == "background_colour")
    vocabulary = answer_vocabulary(splits["train"])
    summary.vocabulary_size = len(vocabulary)
    summary.oov_share = {name: out_of_vocabulary_share(splits[name], vocabulary) for name in SPLITS}

    features = vqa_features()
    dataset = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {col: [row[col] for row in rows] for col in features}, features=features
            )
            for name, rows in splits.items()
        }
    )
    for line in summary.log_lines():
        logger.info("%s", line)
    if output is None:
        return dataset
    staging = output.with_name(f"{output.name}.building")
    shutil.rmtree(staging, ignore_errors=True)
    dataset.save_to_disk(
        str(staging), num_shards={name: 1 for name, split in dataset.items() if not split.num_rows}
    )
    (staging / "README.md").write_text(dataset_card(splits, summary, fingerprint), encoding="utf-8")
    source_name = None if isinstance(stamps, datasets.DatasetDict) else str(stamps)
    build = {"source": source_name, "seconds": round(time.perf_counter() - start, 1)}
    (staging / FINGERPRINT_FILE).write_text(json.dumps({**fingerprint, "build": build}, indent=2) + "\n")
    shutil.rmtree(output, ignore_errors=True)
    os.replace(staging, output)
    logger.info("Built the stamps VQA dataset in %s in %.0f s.", output, time.perf_counter() - start)
    return datasets.load_from_disk(str(output))


# ----------------------------------------------------------------------------------------------------
# Card


def _example(rows: Sequence[dict[str, Any]], question_type: str) -> str:
    row = next((r for r in rows if r["question_type"] == question_type), None)
    if row is None:
        return ""
    answers = ", ".join(f"{answer} x{n}" for answer, n in Counter(row["answers"]).most_common())
    return (
        f"| `{row['question_id']}` | {row['question']} | {answers} | {row['multiple_choice_answer']} | "
        f"{row['answer_type']} |"
    )


def dataset_card(
    splits: Mapping[str, Sequence[dict[str, Any]]], summary: BuildSummary, fingerprint: dict[str, Any]
) -> str:
    """The README.md dataset card written next to the data."""
    total = {name: len(rows) for name, rows in splits.items()}
    split_table = "\n".join(
        f"| {name} | {total[name]} | {summary.stamps[name]} | "
        + " | ".join(str(summary.answer_types[name][t]) for t in ANSWER_TYPES)
        + " |"
        for name in splits
    )
    type_table = "\n".join(
        f"| `{qt}` | " + " | ".join(str(summary.question_types[name][qt]) for name in splits) + " |"
        for qt in QUESTION_TYPES
    )
    balance = "; ".join(
        f"{name} {summary.yes_no[name]['yes']} yes / {summary.yes_no[name]['no']} no "
        f"({summary.yes_no[name]['yes'] / max(1, sum(summary.yes_no[name].values())):.1%} yes)"
        for name in splits
    )
    counts = "; ".join(
        f"{name} " + ", ".join(f"{k}: {summary.counts[name][k]}" for k in range(1, MAX_COUNT + 1))
        for name in splits
    )
    nouns = "; ".join(
        f"{name} {summary.with_noun[name]} of {summary.stamps[name]} ({summary.countable[name]} countable)"
        for name in splits
    )
    colours = ", ".join(f"{name} {summary.backgrounds[name]}" for name in BACKGROUND_COLOURS)
    examples = "\n".join(filter(None, (_example(splits["train"], qt) for qt in QUESTION_TYPES)))
    settings = fingerprint["settings"]
    return f"""---
pretty_name: Tux Paint Stamps VQA
license: gpl-2.0
language:
- en
task_categories:
- visual-question-answering
tags:
- vqa
- synthetic
- counting
size_categories:
- 1K<n<10K
---

# Tux Paint Stamps VQA

A small visual question answering dataset in the format of VQA v2 (ten annotators' answers per question,
the three answer types `yes/no`, `number` and `other`), made deterministically and offline from the Tux
Paint stamps dataset (`recipes/data/stamps.py`) by `recipes/data/stamps_vqa.py`. The "annotators" are
simulated: the answers are derived from the stamps' folders and descriptions, and from how each scene was
drawn.

Settings: builder {fingerprint["builder_version"]}, seed {settings["seed"]},
{settings["scenes_per_stamp"]} scenes per stamp with a countable noun, background question on
{settings["background_share"]:.0%} of the counting scenes.

## Splits

| split | questions | stamps | yes/no | number | other |
| --- | --- | --- | --- | --- | --- |
{split_table}

Each split is made **only from the stamps of the same split** of the stamps dataset, whose splits are
grouped by normalised description: no `test` or `validation` stamp, hence no description of theirs, is in
`train` (as an image, a distractor, or a noun in a question).

| question type | {" | ".join(splits)} |
| --- | {" | ".join("---" for _ in splits)} |
{type_table}

- Yes/no balance: {balance}.
- Counts asked ("How many ...?" answers 1-{MAX_COUNT}): {counts}.
- Background colours: {colours}.
- Stamps whose description gives a usable noun: {nouns}.
- Answer vocabulary of `train` (every annotator answer, normalised): {summary.vocabulary_size} answers.
- Questions whose `multiple_choice_answer` is outside the `train` vocabulary (out-of-vocabulary share):
  validation {summary.oov_share["validation"]:.1%}, test {summary.oov_share["test"]:.1%}. Mostly
  "What is this?" about things never seen in `train`: a classifier over the `train` answers cannot get
  them right.

## Columns

| column | type | content |
| --- | --- | --- |
| `question_id` | string | stable id, `<stamp id>#<question>`: `animals/birds/blackbird#scene1/how_many` |
| `image` | Image | 224x224 RGB PNG: the stamp itself, or a scene (`how_many`, `background_colour`) |
| `question` | string | the question |
| `answers` | list of 10 strings | the ten annotators' answers (raw: one may write `three` for `3`) |
| `multiple_choice_answer` | string | the most common normalised answer |
| `answer_type` | string | `yes/no`, `number` or `other` |
| `question_type` | string | the template: {", ".join(f"`{qt}`" for qt in QUESTION_TYPES)} |
| `stamp_id` | string | the source stamp (`id` in the stamps dataset) |
| `category` | string | its top-level folder (`animals`, `vehicles`, ...) |

## Examples (train)

| question_id | question | answers | multiple_choice_answer | answer_type |
| --- | --- | --- | --- | --- |
{examples}

## How it is built

- **Head noun** of a description (`head_noun`): the first clause without quotes, one leading determiner
  dropped (`a`, `an`, `the`, `some`, a number word); in "X of Y" Y when X is a quantity or part word
  ("A pair of glasses" -> `glasses`, "A head of lettuce" -> `lettuce`), else X ("A cup of coffee" ->
  `cup`); the phrase ends at a preposition, conjunction or verb ("A spider dancing with a fly" ->
  `spider`); the head is its last word, or the last two for a listed compound (`fire truck`, `sea lion`).
  Adjectives are dropped ("A red fire truck." -> `fire truck`, "A brown hen." -> `hen`). No noun, hence
  no noun question, for letters, digits, ASL signs, coins, chess pieces, music notes, faces and road signs
  (their descriptions do not name the pictured thing), proper names ("A Silver Gull", "Santa Claus", the
  planets), and descriptions that are not a noun phrase ("Boom!!!", "Eat your bread!"). The rule is
  approximate: a few heads are vaguer than a person would say (`model` for a globe, `slice` for a lemon
  slice).
- **yes/no** (all ten annotators agree):
  - "Is this an animal?": yes from the `animals` folder (toys excluded), no from other folders, never on a
    stamp whose description or id mentions an animal (a black cat in `seasonal`, a rubber duck); every
    animal and as many others (chosen by a hash) are asked, so yes = no.
  - "Is there a(n) {{noun}} in the picture?" as a pair on each stamp with a countable or plural noun: its
    own noun (yes) and the noun of another stamp of the same split (no) that it cannot be confused with
    (not the same or a listed synonym, not a word of the stamp's description or id, not a broader or
    narrower word: no "Is there a flower?" on a daffodil).
- **number**: "How many {{plural}} are there?" on scenes of 1-{MAX_COUNT} copies of a stamp whose
  description starts with "a"/"an" (one countable thing), plus 0-{MAX_DISTRACTORS} copies of one stamp of
  another category of the same split that cannot be confused with it, on a plain background. Copies get
  random sizes, left-right flips (not for symbols and road signs) and positions whose boxes never
  overlap, so each is fully visible; the builder checks the number of pasted copies. Plurals by simple
  rules (approximate for rare words). The answer is the digit; in half of the questions one annotator
  writes the number word (`three`), which the normalisation maps to `3`.
- **other**:
  - "What is this?" ("What are these?" for plurals) on the stamp: 7-9 annotators give the head noun, the
    others a broader word (a short list: `bird`, `fish`, `truck`, `ball`, ... by the end of the noun;
    `animal`, `fruit`, `vegetable`, `food`, `flower`, `plant`, `instrument`, `hat`, `tool`, `building`,
    `vehicle` by folder) or, without one, the noun with its modifier from the description
    (`electric kettle`).
  - "What colour is the background?" on scenes painted one of
    {", ".join(BACKGROUND_COLOURS)}; a colour too close to the stamp's mean colour is redrawn, so the
    stamp stays visible.
- **Images**: the stamps dataset flattens every stamp on white; the scenes cut each stamp out (the
  near-white region connected to the border becomes transparent, edge pixels are un-mixed from white; an
  image with an alpha channel keeps its own) and composite it with its alpha, resized with premultiplied
  alpha.
- **Determinism**: every random choice comes from a generator seeded by a hash of the seed, split, stamp
  and question, never from global state: the same stamps dataset and settings give the same dataset. The
  build is cached by a fingerprint of the source content, the builder version and the settings
  (`{FINGERPRINT_FILE}`).
- **Soft scores**: `recipes.data.stamps_vqa.soft_scores(answers, vocabulary)` gives VQA v2 training
  targets, `min(1, count / 3)` per normalised answer (the simplification ViLT and BUTD train with);
  `answer_vocabulary(train)` the answer classes.

## Licence

Same as the Tux Paint stamps: GNU GPL, version 2 or later (Debian:
`/usr/share/doc/tuxpaint-stamps-default/copyright`), with artwork from many upstream sources under free
licences. The questions and scenes are generated here.

## Known limits

- The questions come from five templates and the answers from rules: the dataset tests grounding of
  nouns, counting and colour on clean cartoon images, not open-ended visual reasoning.
- Head nouns and plurals are derived by rules and are sometimes vague or awkward; "Is this an animal?"
  follows the stamps' folders.
- "What is this?" on `test` mostly asks for nouns never seen in `train` (see the share above); yes/no,
  counting and colour answers are all in the `train` vocabulary.
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stamps", required=True, help="Folder of the stamps dataset (recipes/data/stamps.py)."
    )
    parser.add_argument("--output_dir", required=True, help="Where to save the DatasetDict and its card.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes_per_stamp", type=int, default=2)
    parser.add_argument("--background_share", type=float, default=0.5)
    parser.add_argument("--force", action="store_true", help="Rebuild even if the cache matches.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        dataset = build_stamps_vqa_dataset(
            args.stamps,
            args.output_dir,
            seed=args.seed,
            scenes_per_stamp=args.scenes_per_stamp,
            background_share=args.background_share,
            force=args.force,
        )
    except StampsBuildError as err:
        sys.exit(f"error: {err}")
    for name, split in dataset.items():
        types = Counter(split["answer_type"])
        print(f"{name}: {split.num_rows} questions, " + ", ".join(f"{t} {types[t]}" for t in ANSWER_TYPES))


if __name__ == "__main__":
    main()
