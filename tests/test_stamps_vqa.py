"""Tests for the stamps VQA builder (recipes/data/stamps_vqa.py).

The source is a small stamps `DatasetDict` built in code: each stamp is a filled ellipse of its own pure
colour on white (as the stamps dataset stores them: flattened on white, 224x224 RGB), so the copies pasted in
a scene can be counted back by colour.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from recipes.data.stamps import StampsBuildError, normalize_description
from recipes.data.stamps_vqa import (
    BACKGROUND_COLOURS,
    FINGERPRINT_FILE,
    IMAGE_SIZE,
    MAX_COUNT,
    MAX_DISTRACTORS,
    NUM_ANSWERS,
    build_stamps_vqa_dataset,
    compose_scene,
    cutout,
    head_noun,
    pluralize,
)
from recipes.data.vqa import answer_vocabulary, normalize_answer, out_of_vocabulary_share, soft_scores

SPLITS = ("train", "validation", "test")
# split -> [(id, description)]; descriptions never straddle splits, as in the stamps dataset.
SMALL_STAMPS = {
    "train": [
        ("animals/birds/blackbird", "A blackbird."),
        ("animals/mammals/cats/lion", "A lion."),
        ("animals/mammals/cats/lion-2", "A lion."),
        ("animals/mammals/dogs/dog", "A dog."),
        ("food/fruit/apple", "A red apple."),
        ("food/fruit/banana", "A banana."),
        ("household/tools/hammer", "A hammer."),
        ("household/dishes/spoon", "A spoon."),
        ("household/rubberduck", "A rubber duck."),
        ("vehicles/auto/sportscar", "A sports car."),
        ("clothes/glasses", "A pair of glasses."),
        ("symbols/alphabets/english/a_filled", "The letter a."),
        ("plants/flowers/rose", "A rose."),
        ("seasonal/halloween/blackcat", "A black cat."),
        ("town/houses/cartoon/tent", "A tent."),
    ],
    "validation": [
        ("animals/mammals/bovines/cow", "A cow."),
        ("food/fruit/pear", "A pear."),
        ("household/dishes/fork", "A fork."),
        ("vehicles/auto/truck", "A pickup truck."),
    ],
    "test": [
        ("animals/mammals/equines/zebra", "A zebra."),
        ("animals/birds/owl", "An owl."),
        ("food/fruit/mango", "A mango."),
        ("household/tools/saw", "A saw."),
        ("vehicles/masstransit/bus", "A bus."),
        ("plants/flowers/daisies", "Some daisies."),
    ],
}
# One pure colour per stamp, far from white, black and every background colour (pixels within TOLERANCE of it
# belong to that stamp).
STAMP_COLOURS = [
    (255, 0, 255), (0, 255, 255), (0, 128, 128), (128, 128, 0), (255, 128, 192), (128, 64, 0), (0, 0, 128),
    (192, 192, 192), (100, 255, 100), (255, 255, 140), (160, 0, 60), (90, 90, 90), (0, 190, 255),
    (255, 80, 120), (180, 120, 255), (60, 100, 20), (200, 255, 0), (0, 60, 60), (140, 140, 200),
    (255, 200, 150), (120, 0, 200), (40, 220, 160), (230, 100, 0), (100, 40, 80), (170, 200, 170),
]  # fmt: skip
TOLERANCE = 6
COLOUR_OF = {
    stamp_id: STAMP_COLOURS[i]
    for i, stamp_id in enumerate(stamp_id for split in SPLITS for stamp_id, _ in SMALL_STAMPS[split])
}


def _ellipse_png(colour: tuple[int, int, int], box=(40, 60, 184, 164)) -> bytes:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    ImageDraw.Draw(image).ellipse(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def small_stamps_dataset() -> datasets.DatasetDict:
    """The columns of the stamps dataset that the VQA builder reads, plus one it ignores."""
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "category": datasets.Value("string"),
            "language": datasets.Value("string"),
            "text": datasets.Value("string"),
            "image": datasets.Image(),
        }
    )
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "id": [stamp_id for stamp_id, _ in rows],
                    "category": [stamp_id.split("/")[0] for stamp_id, _ in rows],
                    "language": ["en"] * len(rows),
                    "text": [text for _, text in rows],
                    "image": [
                        {"bytes": _ellipse_png(COLOUR_OF[stamp_id]), "path": None} for stamp_id, _ in rows
                    ],
                },
                features=features,
            )
            for split, rows in SMALL_STAMPS.items()
        }
    )


def count_colour(image: Image.Image, colour: tuple[int, int, int], min_area: int = 20) -> int:
    """Connected regions of ``colour`` (within TOLERANCE) of at least ``min_area`` pixels."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    mask = (np.abs(pixels - np.array(colour)) <= TOLERANCE).all(axis=2)
    labels, n = ndimage.label(mask)
    return int(sum(size >= min_area for size in np.bincount(labels.ravel())[1:])) if n else 0


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    source = small_stamps_dataset()
    output = tmp_path_factory.mktemp("vqa") / "stamps_vqa"
    dataset = build_stamps_vqa_dataset(source, output)
    return source, output, dataset


def _texts(source: datasets.DatasetDict, split: str) -> dict[str, str]:
    return dict(zip(source[split]["id"], source[split]["text"], strict=True))


# ----------------------------------------------------------------------------------------------------
# The built dataset


def test_columns_and_features(built):
    _, _, dataset = built
    assert set(dataset) == set(SPLITS)
    features = dataset["train"].features
    assert list(features) == [
        "question_id",
        "image",
        "question",
        "answers",
        "multiple_choice_answer",
        "answer_type",
        "question_type",
        "stamp_id",
        "category",
    ]
    assert isinstance(features["image"], datasets.Image)
    assert all(split.features == features for split in dataset.values())
    for split in dataset.values():
        assert split.num_rows > 0
        assert len(set(split["question_id"])) == split.num_rows


def test_rows_have_ten_answers_and_their_majority(built):
    _, _, dataset = built
    expected_types = {
        "is_animal": "yes/no",
        "is_there": "yes/no",
        "how_many": "number",
        "what_is": "other",
        "background_colour": "other",
    }
    for split in dataset.values():
        for row in split.remove_columns("image"):
            assert len(row["answers"]) == NUM_ANSWERS
            normalised = Counter(normalize_answer(answer) for answer in row["answers"])
            assert row["multiple_choice_answer"] == normalised.most_common(1)[0][0]
            assert expected_types[row["question_type"]] == row["answer_type"]
            assert row["category"] == row["stamp_id"].split("/")[0]


def test_all_answer_types_in_every_split(built):
    _, _, dataset = built
    for split in dataset.values():
        assert set(split["answer_type"]) == {"yes/no", "number", "other"}
    assert set(dataset["train"]["question_type"]) == set(
        ["is_animal", "is_there", "how_many", "what_is", "background_colour"]
    )


def test_images_are_224_rgb_png(built):
    _, _, dataset = built
    for split in dataset.values():
        for image in split["image"]:
            assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB"
    table = dataset["train"].data.table
    assert table.column("image")[0].as_py()["bytes"][:8] == b"\x89PNG\r\n\x1a\n"


def test_splits_never_share_stamps_or_descriptions_with_train(built):
    source, _, dataset = built
    train_ids = set(dataset["train"]["stamp_id"])
    train_texts = {normalize_description(text) for text in _texts(source, "train").values()}
    for name in ("validation", "test"):
        ids = set(dataset[name]["stamp_id"])
        assert ids <= set(source[name]["id"])  # every question is about a stamp of the same split
        assert not ids & train_ids
        texts = _texts(source, name)
        assert not {normalize_description(texts[stamp_id]) for stamp_id in ids} & train_texts


def test_no_nouns_come_from_the_same_split(built):
    """The noun of every "Is there ...?" is the head noun of a stamp of the same split."""
    source, _, dataset = built
    for name in SPLITS:
        nouns = {noun.noun for text in source[name]["text"] if (noun := head_noun(text)) is not None}
        for row in dataset[name].remove_columns("image"):
            if row["question_type"] == "is_there":
                asked = row["question"].removeprefix("Is there a ").removeprefix("Is there an ")
                asked = asked.removeprefix("Are there ").removesuffix(" in the picture?")
                assert asked in nouns, (name, row["question"])


def test_yes_no_is_balanced(built):
    """Balanced by construction: each "Is there ...?" is a yes/no pair, "Is this an animal?" asks as many
    non-animals as animals. Tolerance: none (yes == no in every split)."""
    _, _, dataset = built
    for name, split in dataset.items():
        answers = Counter(
            row["multiple_choice_answer"]
            for row in split.remove_columns("image")
            if row["answer_type"] == "yes/no"
        )
        assert set(answers) == {"yes", "no"} and answers["yes"] == answers["no"], (name, answers)


def test_is_animal_follows_the_category_and_spares_animals_elsewhere(built):
    _, _, dataset = built
    rows = [row for row in dataset["train"].remove_columns("image") if row["question_type"] == "is_animal"]
    assert rows
    for row in rows:
        assert row["multiple_choice_answer"] == ("yes" if row["category"] == "animals" else "no")
        assert row["stamp_id"] not in ("seasonal/halloween/blackcat", "household/rubberduck")


def test_counts_match_the_pasted_copies(built):
    """Every "How many ...?" answer equals the copies of the stamp's colour in the image; the other stamp
    colour, if any, is a distractor of another category of the same split, pasted at most 3 times."""
    source, _, dataset = built
    for name, split in dataset.items():
        split_colours = {COLOUR_OF[stamp_id]: stamp_id for stamp_id in source[name]["id"]}
        others = {
            COLOUR_OF[stamp_id] for other in SPLITS if other != name for stamp_id in source[other]["id"]
        }
        seen = with_distractor = 0
        for row in split:
            if row["question_type"] != "how_many":
                continue
            seen += 1
            count = int(row["multiple_choice_answer"])
            assert 1 <= count <= MAX_COUNT
            assert count_colour(row["image"], COLOUR_OF[row["stamp_id"]]) == count, row["question_id"]
            distractors = {
                colour: n
                for colour, stamp_id in split_colours.items()
                if stamp_id != row["stamp_id"] and (n := count_colour(row["image"], colour))
            }
            assert len(distractors) <= 1
            with_distractor += bool(distractors)
            for colour, n in distractors.items():
                assert n <= MAX_DISTRACTORS
                assert split_colours[colour].split("/")[0] != row["category"]
            assert not any(count_colour(row["image"], colour) for colour in others)
        assert seen > 0 and with_distractor > 0


def test_questions_name_the_stamp(built):
    _, _, dataset = built
    rows = {row["question_id"]: row for row in dataset["train"].remove_columns("image")}
    assert rows["animals/birds/blackbird#what_is"]["question"] == "What is this?"
    answers = Counter(rows["animals/birds/blackbird#what_is"]["answers"])
    assert answers["blackbird"] >= 7 and set(answers) == {"blackbird", "bird"}
    assert rows["animals/birds/blackbird#is_there/yes"]["question"] == "Is there a blackbird in the picture?"
    assert rows["clothes/glasses#what_is"]["question"] == "What are these?"
    assert rows["clothes/glasses#is_there/yes"]["question"] == "Are there glasses in the picture?"
    how_many = [row for qid, row in rows.items() if qid.startswith("household/tools/hammer#scene")]
    assert any(row["question"] == "How many hammers are there?" for row in how_many)
    assert not any(qid.startswith("symbols/") and "#what_is" in qid for qid in rows)  # letters name no thing
    colours = [row for row in rows.values() if row["question_type"] == "background_colour"]
    assert colours and all(row["multiple_choice_answer"] in BACKGROUND_COLOURS for row in colours)


def test_background_colour_is_the_painted_one(built):
    _, _, dataset = built
    for row in dataset["test"]:
        if row["question_type"] == "background_colour":
            corner_votes = Counter(
                min(BACKGROUND_COLOURS, key=lambda c: np.abs(np.array(BACKGROUND_COLOURS[c]) - pixel).sum())
                for pixel in np.asarray(row["image"]).reshape(-1, 3)[::97].astype(int)
            )
            assert corner_votes.most_common(1)[0][0] == row["multiple_choice_answer"]


def test_card_reports_counts_balance_and_oov(built):
    _, output, dataset = built
    card = (output / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "license: gpl-2.0" in card
    for name, split in dataset.items():
        assert f"| {name} | {split.num_rows} |" in card
    vocabulary = answer_vocabulary(dataset["train"])
    share = out_of_vocabulary_share(dataset["test"], vocabulary)
    assert f"test {share:.1%}" in card
    assert "50.0% yes" in card
    for question_type in ("is_animal", "is_there", "how_many", "what_is", "background_colour"):
        assert f"| `{question_type}` |" in card


def test_second_build_reuses_cache(built, tmp_path):
    source, output, dataset = built
    files = [output / FINGERPRINT_FILE, *sorted(output.rglob("*.arrow"))]
    before = [path.stat().st_mtime_ns for path in files]
    again = build_stamps_vqa_dataset(source, output)
    assert [path.stat().st_mtime_ns for path in files] == before
    assert {k: v.num_rows for k, v in again.items()} == {k: v.num_rows for k, v in dataset.items()}
    # The same stamps saved to disk and passed as a folder: same content, same fingerprint.
    source.save_to_disk(str(tmp_path / "stamps"))
    build_stamps_vqa_dataset(tmp_path / "stamps", output)
    assert [path.stat().st_mtime_ns for path in files] == before
    saved = json.loads((output / FINGERPRINT_FILE).read_text())
    assert saved["settings"] == {"seed": 0, "scenes_per_stamp": 2, "background_share": 0.5}


def test_builds_are_deterministic(built, tmp_path):
    source, output, _ = built
    again = tmp_path / "again"
    build_stamps_vqa_dataset(small_stamps_dataset(), again, force=True)

    def arrow_bytes(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.arrow")}

    assert arrow_bytes(output) == arrow_bytes(again)
    other_seed = build_stamps_vqa_dataset(source, seed=1)  # in memory, not cached
    saved = datasets.load_from_disk(str(output))
    assert other_seed["train"]["question_id"][:] != saved["train"]["question_id"][:] or (
        other_seed["train"]["multiple_choice_answer"][:] != saved["train"]["multiple_choice_answer"][:]
    )


def test_changed_settings_rebuild(tmp_path):
    source = small_stamps_dataset()
    first = build_stamps_vqa_dataset(source, tmp_path / "out", scenes_per_stamp=1)
    second = build_stamps_vqa_dataset(source, tmp_path / "out", scenes_per_stamp=3)
    count = Counter(first["train"]["question_type"])["how_many"]
    assert Counter(second["train"]["question_type"])["how_many"] == 3 * count


def test_missing_source_says_how_to_build_it(tmp_path):
    with pytest.raises(StampsBuildError, match="python -m recipes.data.stamps"):
        build_stamps_vqa_dataset(tmp_path / "nowhere", tmp_path / "out")
    source = small_stamps_dataset()
    source["test"] = source["test"].remove_columns("text")
    with pytest.raises(StampsBuildError, match="'test' lacks the column"):
        build_stamps_vqa_dataset(source)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep me")
    with pytest.raises(StampsBuildError, match="not empty"):
        build_stamps_vqa_dataset(small_stamps_dataset(), tmp_path / "full")


# ----------------------------------------------------------------------------------------------------
# Scenes and cut-outs


def _blob(colour, size=(60, 40)) -> Image.Image:
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((0, 0, size[0] - 1, size[1] - 1), fill=(*colour, 255))
    return image


@pytest.mark.parametrize("count", range(1, MAX_COUNT + 1))
def test_compose_scene_pastes_exactly_the_copies(count):
    target, distractor = (255, 0, 255), (0, 255, 255)
    for distractors in range(MAX_DISTRACTORS + 1):
        rng = np.random.default_rng(count * 10 + distractors)
        scene, placements = compose_scene(
            [(_blob(target), count), (_blob(distractor, (30, 50)), distractors)],
            BACKGROUND_COLOURS["green"],
            rng,
        )
        assert scene.mode == "RGB" and scene.size == (IMAGE_SIZE, IMAGE_SIZE)
        assert Counter(p.index for p in placements) == Counter(
            {0: count, 1: distractors} if distractors else {0: count}
        )
        assert count_colour(scene, target) == count
        assert count_colour(scene, distractor) == distractors
        for i, a in enumerate(placements):
            assert 0 <= a.box[0] < a.box[2] <= IMAGE_SIZE and 0 <= a.box[1] < a.box[3] <= IMAGE_SIZE
            for b in placements[i + 1 :]:
                assert (
                    a.box[2] <= b.box[0]
                    or b.box[2] <= a.box[0]
                    or a.box[3] <= b.box[1]
                    or b.box[3] <= a.box[1]
                )


def test_compose_scene_is_deterministic():
    def draw(seed):
        scene, placements = compose_scene(
            [(_blob((255, 0, 255)), 4)], (20, 20, 20), np.random.default_rng(seed)
        )
        return scene.tobytes(), placements

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_cutout_makes_the_white_background_transparent():
    image = Image.new("RGB", (100, 80), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 10, 79, 69), fill=(200, 30, 30))
    draw.rectangle((40, 30, 59, 49), fill=(255, 255, 255))  # a white hole inside the drawing stays opaque
    stamp = cutout(image)
    assert stamp.mode == "RGBA" and stamp.size == (60, 60)  # cropped to the drawing
    alpha = np.asarray(stamp)[..., 3]
    assert alpha[30, 30] == 255 and alpha[0, 0] == 255
    assert (np.asarray(stamp)[30, 30, :3] == 255).all()
    padded = Image.new("RGBA", (120, 100), (0, 0, 0, 0))
    padded.paste(_blob((0, 0, 255)), (10, 10))
    assert cutout(padded).size == (60, 40)  # an alpha channel is kept and used
    assert np.asarray(cutout(Image.open(io.BytesIO(_ellipse_png((0, 128, 0))))))[0, 0, 3] == 0


@pytest.mark.skipif(not Path("/usr/share/tuxpaint/stamps").is_dir(), reason="tuxpaint-stamps-default missing")
def test_real_stamp_cutout_and_nouns():
    root = Path("/usr/share/tuxpaint/stamps")
    with Image.open(root / "animals/birds/blackbird.png") as image:
        image.load()
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.convert("RGBA").getchannel("A"))
    stamp = cutout(flat)
    alpha = np.asarray(stamp)[..., 3]
    assert 0.1 < (alpha == 0).mean() < 0.9 and alpha.max() == 255
    nouns = []
    for txt in sorted(root.rglob("*.txt")):
        stamp_id = txt.relative_to(root).with_suffix("").as_posix()
        text = txt.read_text(encoding="utf-8").splitlines()[0] if txt.read_text(encoding="utf-8") else ""
        noun = head_noun(text, stamp_id)
        if noun is not None:
            nouns.append(noun.noun)
            assert noun.noun == noun.noun.lower() and noun.noun.replace(" ", "").isalpha(), (stamp_id, noun)
    assert len(nouns) > 400


# ----------------------------------------------------------------------------------------------------
# Nouns, answers, vocabulary and soft scores


@pytest.mark.parametrize(
    ("text", "stamp_id", "noun", "plural", "countable", "broader"),
    [
        ("A blackbird.", "animals/birds/blackbird", "blackbird", False, True, "bird"),
        ("A red fire truck.", "vehicles/emergency/firetruck", "fire truck", False, True, "truck"),
        ("An orange.", "food/fruit/orange", "orange", False, True, "fruit"),
        ("The baby of a gnu.", "animals/mammals/bovines/gnu-baby", "gnu", False, False, "animal"),
        ("A pair of glasses.", "clothes/glasses1", "glasses", True, False, None),
        ("A cup of coffee.", "household/dishes/coffeecup", "cup", False, True, None),
        ("A head of lettuce.", "food/vegetables/lettuce", "lettuce", False, True, "vegetable"),
        (
            "A spider dancing with a fly.",
            "animals/insects/cartoon/spider_fly",
            "spider",
            False,
            True,
            "animal",
        ),
        ("A blue and yellow flag.", "town/flags/flag", "flag", False, True, None),
        ("A very poisonous lionfish!", "animals/fish/lionfish", "lionfish", False, True, "fish"),
        ("Some blueberries.", "food/fruit/cartoon/blueberry", "blueberries", True, False, "fruit"),
        ("Knitting.", "hobbies/knitting", "knitting", False, False, None),
        ("A silver garbage can.", "household/garbagecan", "garbage can", False, True, None),
        ("A “pattypan” squash.", "food/vegetables/pattypan_squash", "squash", False, True, "vegetable"),
    ],
)
def test_head_noun(text, stamp_id, noun, plural, countable, broader):
    found = head_noun(text, stamp_id)
    assert found is not None
    assert (found.noun, found.plural, found.countable, found.broader) == (noun, plural, countable, broader)


@pytest.mark.parametrize(
    ("text", "stamp_id"),
    [
        ("The letter A.", "symbols/alphabets/english/filled/uppercase/A_filled"),
        ("A Silver Gull.", "animals/birds/silver-gull"),
        ("Boom!!!", "naturalforces/explosion"),
        ("Nun stands for nisht or nothing.", "seasonal/hanukkah/dreydl-nun"),
        ("An important part of Hanukkah is the menorah.", "seasonal/hanukkah/menorah"),
        ("“No U-Turn”.", "town/roadsigns/no_uturn"),
    ],
)
def test_head_noun_none(text, stamp_id):
    assert head_noun(text, stamp_id) is None


def test_pluralize():
    cases = {
        "lion": "lions",
        "box": "boxes",
        "butterfly": "butterflies",
        "key": "keys",
        "mouse": "mice",
        "sheep": "sheep",
        "snowman": "snowmen",
        "fire truck": "fire trucks",
        "knife": "knives",
        "peach": "peaches",
    }
    assert {noun: pluralize(noun) for noun in cases} == cases


def test_normalize_answer():
    assert normalize_answer("Three") == "3"
    assert normalize_answer("  The  Dog. ") == "dog"
    assert normalize_answer("A Fire-Truck!") == "fire truck"
    assert normalize_answer("elf's hat") == "elfs hat"
    assert normalize_answer("yes") == "yes"


ROWS = [
    {"answers": ["cat"] * 8 + ["animal"] * 2, "multiple_choice_answer": "cat"},
    {"answers": ["2"] * 9 + ["two"], "multiple_choice_answer": "2"},
    {"answers": ["yes"] * 10, "multiple_choice_answer": "yes"},
]


def test_answer_vocabulary():
    # yes 10, 2 10 (nine "2" and one "two"), cat 8, animal 2: by count, then alphabetically.
    assert answer_vocabulary(ROWS) == ["2", "yes", "cat", "animal"]
    assert answer_vocabulary(ROWS, min_count=3) == ["2", "yes", "cat"]
    assert answer_vocabulary(datasets.Dataset.from_list(ROWS)) == ["2", "yes", "cat", "animal"]


def test_out_of_vocabulary_share():
    rows = [{"multiple_choice_answer": answer} for answer in ("dog", "cat", "Yes", "two")]
    assert out_of_vocabulary_share(rows, ["2", "yes", "cat"]) == pytest.approx(0.25)  # only "dog"
    assert out_of_vocabulary_share(rows, []) == 1.0
    assert out_of_vocabulary_share([], ["yes"]) == 0.0


def test_soft_scores():
    vocabulary = ["2", "yes", "cat", "animal"]
    assert soft_scores(ROWS[0]["answers"], vocabulary) == {2: 1.0, 3: pytest.approx(2 / 3)}
    assert soft_scores(["Two", "2", "two", "3"], vocabulary) == {0: 1.0}  # "3" is not in the vocabulary
    assert soft_scores(["dog", "Cat"], vocabulary) == {2: pytest.approx(1 / 3)}
    assert soft_scores(["cat"] * 10, {"cat": 5}) == {5: 1.0}
    assert soft_scores(["dog"] * 10, vocabulary) == {}
