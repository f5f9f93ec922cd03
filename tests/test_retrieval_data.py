"""Retrieval data plumbing: metadata conversion, loading, lazy decoding and the CMAN collator, on real files."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import shutil
import subprocess

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from recipes.data.retrieval import (
    BadRowError,
    RetrievalCollator,
    RetrievalColumns,
    add_transcripts,
    caption_group_id,
    load_retrieval_dataset,
    metadata_json_to_dataset,
    metadata_splits_to_dataset_dict,
    normalise_caption,
    prepare_for_lazy_decoding,
    resolve_columns,
)
from tests.tiny import AUDIO_FRAMES, CORPUS, IMAGE_SIZE, MEL_BINS, tiny_processor

CAPTIONS = [CORPUS[0], CORPUS[1], CORPUS[0].upper() + " !", CORPUS[2]]


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    return tiny_processor(tmp_path_factory.mktemp("processor"))


def write_wave(path, seconds: float = 0.3, rate: int = 16000, frequency: float = 440.0):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), rate)
    return path


def write_image(path, seed: int = 0, size=(40, 30)):
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_layout(root, split: str = "train", n: int = 3) -> list[dict]:
    """The metadata layout: `root/metadata/<split>_metadata.json`, `root/audio/<split>/`, `root/images/<split>/`."""
    for folder in ("metadata", f"audio/{split}", f"images/{split}"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        write_wave(root / "audio" / split / f"{i}.wav", frequency=300 + 100 * i)
        write_image(root / "images" / split / f"{i}.png", seed=i)
        entries.append(
            {
                "id": f"{split}-{i}",
                "caption": CAPTIONS[i],
                "audio_filename": f"{i}.wav",
                "image_filename": f"{i}.png",
            }
        )
    (root / "metadata" / f"{split}_metadata.json").write_text(json.dumps(entries))
    return entries


@pytest.fixture
def dataset(tmp_path) -> datasets.Dataset:
    """Four rows with real WAV (16 kHz and 44.1 kHz), OGG and PNG files, decoded lazily."""
    audio = [
        write_wave(tmp_path / "a0.wav"),
        write_wave(tmp_path / "a1.wav", rate=44100),
        write_wave(tmp_path / "a2.ogg", seconds=0.4),
        write_wave(tmp_path / "a3.wav", seconds=0.2, rate=22050),
    ]
    images = [write_image(tmp_path / f"i{i}.png", seed=i) for i in range(4)]
    table = {"id": ["r0", "r1", "r2", "r3"], "text": CAPTIONS, "audio": [str(p) for p in audio]}
    table["image"] = [str(p) for p in images]
    features = datasets.Features(
        id=datasets.Value("string"),
        text=datasets.Value("string"),
        audio=datasets.Audio(),
        image=datasets.Image(),
    )
    return prepare_for_lazy_decoding(datasets.Dataset.from_dict(table, features=features), RetrievalColumns())


# ------------------------------------------------------------------------------------------- metadata layout
def test_metadata_json_to_dataset(tmp_path):
    entries = write_layout(tmp_path)
    ds = metadata_json_to_dataset(
        tmp_path / "metadata" / "train_metadata.json",
        tmp_path / "audio" / "train",
        tmp_path / "images" / "train",
    )
    assert ds.column_names == ["id", "text", "audio", "image"]
    assert ds["id"] == [entry["id"] for entry in entries]
    assert ds["text"] == CAPTIONS[:3]
    assert isinstance(ds.features["audio"], datasets.Audio) and isinstance(
        ds.features["image"], datasets.Image
    )
    assert ds[0]["image"].size == (40, 30)
    assert ds[1]["audio"].get_all_samples().sample_rate == 16000


def test_metadata_missing_audio_file_names_row_and_path(tmp_path):
    write_layout(tmp_path)
    (tmp_path / "audio" / "train" / "1.wav").unlink()
    with pytest.raises(BadRowError, match=r"train-1.*audio file .*1\.wav does not exist") as info:
        metadata_json_to_dataset(
            tmp_path / "metadata" / "train_metadata.json",
            tmp_path / "audio" / "train",
            tmp_path / "images" / "train",
        )
    assert (info.value.row, info.value.column) == ("train-1", "audio")
    # Without the check the row is kept (the collator reports it when it reads the file).
    ds = metadata_json_to_dataset(
        tmp_path / "metadata" / "train_metadata.json",
        tmp_path / "audio" / "train",
        tmp_path / "images" / "train",
        check_files=False,
    )
    assert len(ds) == 3


@pytest.mark.parametrize("change", ["empty caption", "missing key"])
def test_metadata_bad_entry(tmp_path, change):
    entries = write_layout(tmp_path)
    if change == "empty caption":
        entries[2]["caption"] = "  "
    else:
        del entries[2]["image_filename"]
    (tmp_path / "metadata" / "train_metadata.json").write_text(json.dumps(entries))
    expected = "empty caption" if change == "empty caption" else "no 'image_filename'"
    with pytest.raises(BadRowError, match=f"train-2.*{expected}"):
        metadata_json_to_dataset(
            tmp_path / "metadata" / "train_metadata.json",
            tmp_path / "audio" / "train",
            tmp_path / "images" / "train",
        )


def test_metadata_splits_to_dataset_dict_and_load_from_disk(tmp_path):
    for split in ("train", "val", "test"):
        write_layout(tmp_path / "raw", split, n=2)
    splits = metadata_splits_to_dataset_dict(tmp_path / "raw")
    assert sorted(splits) == ["test", "train", "validation"]
    assert splits["validation"]["id"] == ["val-0", "val-1"]

    splits.save_to_disk(tmp_path / "saved")
    shutil.rmtree(tmp_path / "raw")  # save_to_disk embeds the media: the folder is self-contained
    loaded = load_retrieval_dataset(str(tmp_path / "saved"))
    assert isinstance(loaded, datasets.DatasetDict) and sorted(loaded) == ["test", "train", "validation"]
    test = load_retrieval_dataset(str(tmp_path / "saved"), split="test")
    assert test["id"] == ["test-0", "test-1"]
    assert test.features["audio"] == datasets.Audio() and test.features["image"] == datasets.Image()
    assert test[0]["image"].size == (40, 30)
    with pytest.raises(
        ValueError, match=r"no split 'dev'; available splits: \['test', 'train', 'validation'\]"
    ):
        load_retrieval_dataset(str(tmp_path / "saved"), split="dev")


def test_metadata_splits_needs_a_metadata_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_metadata.json"):
        metadata_splits_to_dataset_dict(tmp_path)


def test_load_retrieval_dataset_with_a_loader(tmp_path):
    (tmp_path / "rows.csv").write_text("id,text\n1,a dog\n2,a cat\n")
    ds = load_retrieval_dataset(
        "csv",
        split="train",
        data_files={"train": str(tmp_path / "rows.csv")},
        cache_dir=str(tmp_path / "cache"),
    )
    assert ds["text"] == ["a dog", "a cat"]
    with pytest.raises(ValueError, match="test"):
        load_retrieval_dataset(
            "csv",
            split="test",
            data_files={"train": str(tmp_path / "rows.csv")},
            cache_dir=str(tmp_path / "cache"),
        )


# ------------------------------------------------------------------------------------------ columns, decoding
def test_resolve_columns(dataset):
    assert resolve_columns(dataset, RetrievalColumns()) == ("text", "audio", "image")
    assert resolve_columns(dataset, RetrievalColumns(audio=None)) == ("text", "image")
    assert resolve_columns(dataset, RetrievalColumns(), ["image", "audio"]) == ("audio", "image")
    with pytest.raises(
        ValueError, match=r"'caption' \(text\) is not in the dataset; available columns: \['id'"
    ):
        resolve_columns(dataset, RetrievalColumns(text="caption"), ["text", "image"])
    with pytest.raises(ValueError, match="None of the columns"):
        resolve_columns(dataset.select_columns(["id"]), RetrievalColumns())
    with pytest.raises(ValueError, match="RetrievalColumns.audio` is None"):
        resolve_columns(dataset, RetrievalColumns(audio=None), ["audio"])


def test_prepare_for_lazy_decoding(dataset):
    assert dataset.features["audio"] == datasets.Audio(decode=False)
    assert dataset.features["image"] == datasets.Image(decode=False)
    row = dataset[1]
    assert set(row["audio"]) == {"bytes", "path"} and row["audio"]["path"].endswith("a1.wav")
    assert set(row["image"]) == {"bytes", "path"}
    assert dataset.features["text"] == datasets.Value("string")  # other columns are untouched


def test_caption_groups():
    assert normalise_caption("  A dog, barks!  at_the\ttruck. ") == "a dog barks at the truck"
    assert caption_group_id("A DOG barks.") == caption_group_id("a dog  barks")
    assert caption_group_id("a dog barks") != caption_group_id("a cat barks")
    assert -(2**63) <= caption_group_id("a dog barks") < 2**63


# ------------------------------------------------------------------------------------------------- collator
def test_collator_all_modalities(dataset, processor):
    batch = RetrievalCollator(processor)([dataset[i] for i in range(4)])
    assert set(batch) == {"input_ids", "attention_mask", "input_values", "pixel_values", "group_ids"}
    assert batch["input_ids"].shape[0] == 4 and batch["attention_mask"].shape == batch["input_ids"].shape
    assert batch["input_values"].shape == (4, AUDIO_FRAMES, MEL_BINS)
    assert batch["pixel_values"].shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["group_ids"].dtype == torch.int64
    groups = batch["group_ids"].tolist()
    assert groups[0] == groups[2] == caption_group_id(CAPTIONS[0])  # same caption up to case and punctuation
    assert len({groups[0], groups[1], groups[3]}) == 3


@pytest.mark.parametrize(
    "columns, modalities, keys",
    [
        (RetrievalColumns(audio=None), None, {"input_ids", "attention_mask", "pixel_values"}),
        (RetrievalColumns(), ["audio"], {"input_values"}),
        (RetrievalColumns(), ["text", "audio"], {"input_ids", "attention_mask", "input_values"}),
        (RetrievalColumns(text=None), None, {"input_values", "pixel_values"}),
        (RetrievalColumns(), ["image"], {"pixel_values"}),
    ],
)
def test_collator_modality_subsets(dataset, processor, columns, modalities, keys):
    batch = RetrievalCollator(processor, columns=columns, modalities=modalities)([dataset[0], dataset[1]])
    assert set(batch) == keys | {"group_ids"}
    assert all(value.shape[0] == 2 for value in batch.values())


def test_collator_group_ids_from_id_without_text(dataset, processor):
    rows = [dataset[i] for i in range(3)] + [dataset[0]]
    for row in rows:
        del row["text"]
    groups = RetrievalCollator(processor)(rows)["group_ids"].tolist()
    assert groups[0] == groups[3] and len(set(groups[:3])) == 3


def test_collator_mixed_sampling_rates(tmp_path, processor):
    """A 44.1 kHz clip is resampled to the processor's rate: same features as the same tone recorded at 16 kHz."""
    rows = [
        {"audio": {"bytes": None, "path": str(write_wave(tmp_path / f"{rate}.wav", rate=rate))}}
        for rate in (44100, 16000)
    ]
    values = RetrievalCollator(processor)(rows)["input_values"]
    assert values.shape == (2, AUDIO_FRAMES, MEL_BINS)
    tone_bins = slice(0, 6)  # up to about 1 kHz; the other bins hold only the 16-bit quantisation noise
    assert torch.allclose(values[0, :, tone_bins], values[1, :, tone_bins], atol=1e-3)


def test_collator_decodes_bytes_and_in_memory_values(dataset, processor):
    row = dataset[0]
    with open(row["audio"]["path"], "rb") as audio, open(row["image"]["path"], "rb") as image:
        as_bytes = {
            **row,
            "audio": {"bytes": audio.read(), "path": None},
            "image": {"bytes": image.read(), "path": None},
        }
    wave, rate = sf.read(row["audio"]["path"], dtype="float32")
    in_memory = {
        **row,
        "audio": {"array": wave, "sampling_rate": rate},
        "image": Image.open(row["image"]["path"]),
    }
    collator = RetrievalCollator(processor)
    reference = collator([row])
    for other in (collator([as_bytes]), collator([in_memory])):
        for key in reference:
            assert torch.allclose(reference[key].float(), other[key].float())


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
def test_collator_falls_back_to_torchcodec(tmp_path, processor):
    """AAC in MP4 is not a soundfile format; torchcodec (ffmpeg) decodes it."""
    wav, m4a = write_wave(tmp_path / "tone.wav"), tmp_path / "tone.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    with pytest.raises(sf.LibsndfileError):
        sf.read(m4a)
    batch = RetrievalCollator(processor)([{"audio": str(m4a)}, {"audio": str(wav)}])
    assert batch["input_values"].shape == (2, AUDIO_FRAMES, MEL_BINS)


def corrupt(dataset, tmp_path, kind: str, index: int = 1) -> list[dict]:
    rows = [dataset[i] for i in range(len(dataset))]
    if kind == "corrupt png":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)
        rows[index]["image"] = {"bytes": None, "path": str(tmp_path / "bad.png")}
    elif kind == "corrupt audio":
        (tmp_path / "bad.ogg").write_bytes(b"OggS" + b"garbage" * 20)
        rows[index]["audio"] = {"bytes": None, "path": str(tmp_path / "bad.ogg")}
    elif kind == "missing file":
        rows[index]["audio"] = {"bytes": None, "path": str(tmp_path / "gone.wav")}
    elif kind == "empty caption":
        rows[index]["text"] = " \n"
    elif kind == "empty audio":
        sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
        rows[index]["audio"] = {"bytes": None, "path": str(tmp_path / "empty.wav")}
    return rows


BAD_ROWS = {
    "corrupt png": ("image", "bad.png.*cannot be decoded"),
    "corrupt audio": ("audio", "bad.ogg.*cannot be decoded"),
    "missing file": ("audio", "gone.wav does not exist"),
    "empty caption": ("text", "caption is empty"),
    "empty audio": ("audio", "audio is empty"),
}


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_collator_bad_row_raises(dataset, processor, tmp_path, kind):
    column, cause = BAD_ROWS[kind]
    with pytest.raises(BadRowError, match=f"Row id='r1', column '{column}': .*{cause}") as info:
        RetrievalCollator(processor)(corrupt(dataset, tmp_path, kind))
    assert (info.value.row, info.value.column) == ("r1", column)


def test_collator_bad_row_without_id_names_the_position(dataset, processor, tmp_path):
    rows = corrupt(dataset, tmp_path, "missing file", index=2)
    with pytest.raises(BadRowError, match="Row #2 of the batch, column 'audio'"):
        RetrievalCollator(processor, columns=RetrievalColumns(id=None))(rows)


def test_collator_skips_and_counts_bad_rows(dataset, processor, tmp_path, caplog):
    collator = RetrievalCollator(processor, skip_bad_rows=True)
    with caplog.at_level(logging.WARNING, logger="recipes.data.retrieval"):
        for kind in BAD_ROWS:
            batch = collator(corrupt(dataset, tmp_path, kind))
            assert batch["pixel_values"].shape[0] == 3
            assert caption_group_id(CAPTIONS[1]) not in batch["group_ids"].tolist()
    assert collator.num_skipped == len(BAD_ROWS)
    assert sum("id='r1'" in record.getMessage() for record in caplog.records) == len(BAD_ROWS)
    rows = corrupt(dataset, tmp_path, "missing file")[1:2]
    with pytest.raises(BadRowError, match="nothing to train on"):
        collator(rows)
    assert collator.num_skipped == len(BAD_ROWS) + 1


def test_collator_pickles(dataset, processor):
    collator = RetrievalCollator(processor, skip_bad_rows=True, train=True, seed=3)
    collator([{**dataset[0], "text": ""}, dataset[1]])
    for clone in (pickle.loads(pickle.dumps(collator)), copy.deepcopy(collator)):
        assert clone.num_skipped == 1 and clone.seed == 3
        assert set(clone([dataset[0], dataset[1]])) == set(collator([dataset[0], dataset[1]]))


def test_dataloader_with_workers(dataset, processor, tmp_path):
    rows = corrupt(dataset, tmp_path, "missing file")
    bad = datasets.Dataset.from_list(rows, features=dataset.features)
    collator = RetrievalCollator(processor, skip_bad_rows=True, train=True)
    loader = torch.utils.data.DataLoader(bad, batch_size=2, num_workers=2, collate_fn=collator)
    sizes = [batch["input_values"].shape[0] for batch in loader]
    assert sorted(sizes) == [1, 2]
    assert collator.num_skipped == 1  # counted in a worker, read in the main process


def test_bad_row_error_survives_a_dataloader_worker(dataset, processor, tmp_path):
    """Workers send errors as `ExceptionWrapper`s, rebuilt from the message alone: the type must survive that.

    (A real failing worker is not used here: torch then waits 5 s per worker at shutdown.)
    """
    from torch._utils import ExceptionWrapper

    with pytest.raises(BadRowError) as info:
        RetrievalCollator(processor)(corrupt(dataset, tmp_path, "missing file"))
    wrapper = ExceptionWrapper((info.type, info.value, info.tb), where="in DataLoader worker process 0")
    with pytest.raises(BadRowError, match="(?s)worker process 0.*Row id='r1', column 'audio'"):
        wrapper.reraise()


# ------------------------------------------------------------------------------------------- augmentation
def test_train_augmentation_is_deterministic(tmp_path, processor):
    long_clip = write_wave(tmp_path / "long.wav", seconds=1.5, frequency=200)
    rows = [
        {"id": "long", "text": CORPUS[0], "audio": str(long_clip)},
        {"id": "short", "text": CORPUS[1], "audio": str(write_wave(tmp_path / "short.wav"))},
    ]

    def run(collator, steps: int = 2):
        return [collator(rows)["input_values"] for _ in range(steps)]

    first, again = (
        run(RetrievalCollator(processor, train=True, seed=0)),
        run(RetrievalCollator(processor, train=True, seed=0)),
    )
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # the step counter draws anew for each batch
    assert not torch.equal(first[0], run(RetrievalCollator(processor, train=True, seed=1), 1)[0])
    evaluation = run(RetrievalCollator(processor), 2)
    assert torch.equal(evaluation[0], evaluation[1])
    assert not torch.equal(first[0], evaluation[0])


def test_train_crop_draws_a_window_of_long_clips(tmp_path, processor):
    """A 1.5 s chirp (200 Hz rising to 3.2 kHz): eval keeps its start, training windows start anywhere in it."""
    rate = processor.sampling_rate
    t = np.arange(int(1.5 * rate)) / rate
    sf.write(
        tmp_path / "chirp.wav", (0.3 * np.sin(2 * np.pi * (200 + 1000 * t) * t)).astype(np.float32), rate
    )
    rows = [{"audio": str(tmp_path / "chirp.wav")}]

    def first_frame_peak(
        batch,
    ) -> int:  # the loudest mel bin of the first frame: the pitch, whatever the gain
        return int(batch["input_values"][0, 0].argmax())

    start = first_frame_peak(RetrievalCollator(processor)(rows))
    collator = RetrievalCollator(processor, train=True)
    peaks = [first_frame_peak(collator(rows)) for _ in range(6)]
    assert sum(peak > start for peak in peaks) >= 4, (start, peaks)


# ------------------------------------------------------------------------------------------------ transcripts
@pytest.fixture(scope="module")
def transcribing(tmp_path_factory):
    """A tiny CMAN whose random tiny Whisper transcribes (deterministically), and its processor."""
    from tests.tiny import tiny_transcribing_model

    return tiny_transcribing_model(tmp_path_factory.mktemp("transcribing"))


def test_add_transcripts_writes_what_the_recognizer_hears_and_the_collator_feeds_it(dataset, transcribing):
    model, processor = transcribing
    with_transcripts = add_transcripts(dataset, model, processor, batch_size=3)
    assert with_transcripts.column_names == [*dataset.column_names, "transcript"]
    rows = [with_transcripts[i] for i in range(len(dataset))]
    # The same as transcribing each clip on its own, by hand.
    single = RetrievalCollator(processor, modalities=("audio",))
    for row in rows:
        features = single([row])["input_features"]
        assert row["transcript"] == model.transcribe(features)[0]
    assert len({row["transcript"] for row in rows}) > 1
    batch = RetrievalCollator(processor)(rows)
    expected = processor(
        audio=[np.zeros(10, np.float32)] * 4, sampling_rate=16000, transcripts=[r["transcript"] for r in rows]
    )
    torch.testing.assert_close(batch["transcript_input_ids"], expected["transcript_input_ids"])
    with torch.no_grad():
        embeds = model.encode(
            [("audio",), ("text", "audio")], **{k: v for k, v in batch.items() if k != "group_ids"}
        )
    assert embeds[("audio",)].shape == (4, 16)
    # A second call replaces the column rather than adding another.
    assert add_transcripts(with_transcripts, model, processor).column_names == with_transcripts.column_names


def test_add_transcripts_names_a_bad_row_or_leaves_it_empty_when_asked(
    dataset, transcribing, tmp_path, caplog
):
    model, processor = transcribing
    rows = corrupt(dataset, tmp_path, "missing file")
    broken = datasets.Dataset.from_list(rows, features=dataset.features)
    with pytest.raises(BadRowError, match="Row id='r1', column 'audio'.*gone.wav does not exist"):
        add_transcripts(broken, model, processor)
    with caplog.at_level(logging.WARNING, logger="recipes.data.retrieval"):
        skipped = add_transcripts(broken, model, processor, skip_bad_rows=True)
    assert skipped["transcript"][1] == "" and "id='r1'" in caplog.text
    assert skipped["transcript"][0] == add_transcripts(dataset, model, processor)["transcript"][0]
