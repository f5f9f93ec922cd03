"""Data plumbing for the retrieval recipes: load a dataset, pick its columns and collate rows for a retrieval model.

Media are decoded in the collator rather than in `Dataset.__getitem__`, so that a missing or corrupt file raises a
`BadRowError` naming the row, the column and the fix (or is skipped with `skip_bad_rows=True`)::

    dataset = load_retrieval_dataset("outputs/data/stamps", split="train")
    dataset = prepare_for_lazy_decoding(dataset, RetrievalColumns())
    collator = RetrievalCollator(processor, train=True)
    batch = collator([dataset[i] for i in range(8)])  # input_ids, input_values, pixel_values, group_ids, ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional
from PIL import Image

logger = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "image")
#: Split names of the metadata layout (`<root>/metadata/<name>_metadata.json`) and the splits they become.
METADATA_SPLITS = {"train": "train", "val": "validation", "test": "test"}
#: Gain range (dB) of the train-time waveform augmentation.
GAIN_DB = (-6.0, 3.0)
_SKIP_HINT = "Fix or drop the row, or pass `skip_bad_rows=True` to skip such rows."


class BadRowError(ValueError):
    """A dataset row that cannot be used (missing file, undecodable media, empty caption...).

    `row` (the row's id, or its position) and `column` are kept as attributes. The message alone is enough to
    rebuild the error, so it survives being re-raised from a `DataLoader` worker.
    """

    def __init__(self, message: str, *, row: Any = None, column: str | None = None):
        super().__init__(message)
        self.row = row
        self.column = column


#: Builds the `BadRowError` of one row from the column, the cause and the fix.
RowError = Callable[..., BadRowError]


@dataclass
class RetrievalColumns:
    """Column names of a retrieval dataset; `None` means the modality (or the row id) is not used.

    The id column is optional: without it, rows are named by their position in the batch in error messages.
    `transcript` is the column [`add_transcripts`] writes for a model that reads transcripts next to the audio; the
    collator passes it to the processor when the rows have it.
    """

    text: str | None = "text"
    audio: str | None = "audio"
    image: str | None = "image"
    id: str | None = "id"
    transcript: str | None = "transcript"

    def column(self, modality: str) -> str | None:
        return getattr(self, modality)


# --------------------------------------------------------------------------------------------------- loading
def load_retrieval_dataset(
    name_or_path: str,
    *,
    split: str | None = None,
    config_name: str | None = None,
    data_files=None,
    cache_dir: str | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Load a folder written by `save_to_disk`, else anything `datasets.load_dataset` accepts (Hub name, loader
    such as `"audiofolder"`/`"imagefolder"`/`"csv"`/`"json"`, local script or folder).

    Returns the `split` when given, else every split as a `DatasetDict`.
    """
    folder = Path(name_or_path)
    saved = (folder / datasets.config.DATASETDICT_JSON_FILENAME).is_file() or (
        folder / datasets.config.DATASET_STATE_JSON_FILENAME
    ).is_file()
    if not saved:
        return datasets.load_dataset(
            name_or_path, config_name, split=split, data_files=data_files, cache_dir=cache_dir
        )
    if config_name is not None or data_files is not None:
        raise ValueError(
            f"{name_or_path} was written by `save_to_disk`; `config_name` and `data_files` do not apply to it."
        )
    dataset = datasets.load_from_disk(name_or_path)
    if split is None:
        return dataset
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValueError(f"{name_or_path} has no split {split!r}; available splits: {sorted(dataset)}.")
        return dataset[split]
    if dataset.split is not None and str(dataset.split) != split:
        raise ValueError(
            f"{name_or_path} holds the single split {str(dataset.split)!r}, not {split!r}; pass `split=None` "
            "or the folder of the split you want."
        )
    return dataset


def resolve_columns(
    dataset: datasets.Dataset | datasets.IterableDataset,
    columns: RetrievalColumns,
    modalities: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """Check the columns of `modalities` exist in `dataset` and return the modalities to use.

    With `modalities=None`, every modality whose column is set and present is used (at least one must be).
    """
    return _resolve(dataset.column_names, columns, modalities)


def _resolve(
    available: Sequence[str], columns: RetrievalColumns, modalities: Sequence[str] | None
) -> tuple[str, ...]:
    if modalities is None:
        present = tuple(
            m for m in MODALITIES if columns.column(m) is not None and columns.column(m) in available
        )
        if not present:
            raise ValueError(
                f"None of the columns {columns} is in the dataset (columns: {list(available)}); set "
                "`RetrievalColumns(text=..., audio=..., image=...)` to the dataset's column names."
            )
        return present
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"`modalities` must be a non-empty subset of {MODALITIES}, got {list(modalities)}.")
    for modality in modalities:
        column = columns.column(modality)
        if column is None:
            raise ValueError(f"Modality {modality!r} is requested but `RetrievalColumns.{modality}` is None.")
        if column not in available:
            raise ValueError(
                f"Column {column!r} ({modality}) is not in the dataset; available columns: {list(available)}. "
                f"Pass `RetrievalColumns({modality}=<column name>)`."
            )
    return tuple(m for m in MODALITIES if m in modalities)


def prepare_for_lazy_decoding(
    dataset: datasets.Dataset | datasets.IterableDataset, columns: RetrievalColumns
) -> datasets.Dataset | datasets.IterableDataset:
    """Cast the `Image`/`Audio` columns to `decode=False`: rows then carry `{"bytes", "path"}` and the collator
    decodes them, naming the row when a file is missing or corrupt."""
    features = dataset.features or {}
    for column in (columns.audio, columns.image):
        feature = features.get(column) if column is not None else None
        if isinstance(feature, datasets.Audio | datasets.Image) and feature.decode:
            dataset = dataset.cast_column(column, dataclasses.replace(feature, decode=False))
    return dataset


# ------------------------------------------------------------------------------------------- metadata layout
def metadata_json_to_dataset(
    metadata_file: str | os.PathLike,
    audio_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    check_files: bool = True,
) -> datasets.Dataset:
    """Convert a JSON list of `{"id", "caption", "audio_filename", "image_filename"}` (file names relative to
    `audio_dir` / `image_dir`) into a Dataset with `id`, `text`, `audio` (`datasets.Audio`) and `image`
    (`datasets.Image`) columns holding the files' paths.

    Raises `BadRowError` for a missing key, an empty caption or (with `check_files`) a missing file.
    """
    metadata_file = Path(metadata_file)
    with open(metadata_file, encoding="utf-8") as handle:
        entries = json.load(handle)
    if not isinstance(entries, list):
        raise ValueError(f"{metadata_file} must hold a JSON list of rows, got a {type(entries).__name__}.")
    fix = f"Fix the entry in {metadata_file} or remove it."
    data: dict[str, list[str]] = {"id": [], "text": [], "audio": [], "image": []}
    for position, entry in enumerate(entries):
        row = entry.get("id", f"#{position}") if isinstance(entry, dict) else f"#{position}"
        for key in ("id", "caption", "audio_filename", "image_filename"):
            if not isinstance(entry, dict) or key not in entry:
                raise BadRowError(
                    f"Row {row!r} of {metadata_file} has no {key!r}. {fix}", row=row, column=key
                )
        if not isinstance(entry["caption"], str) or not entry["caption"].strip():
            raise BadRowError(
                f"Row {row!r} of {metadata_file} has an empty caption. {fix}", row=row, column="text"
            )
        paths = {
            "audio": Path(audio_dir) / entry["audio_filename"],
            "image": Path(image_dir) / entry["image_filename"],
        }
        for column, path in paths.items():
            if check_files and not path.is_file():
                raise BadRowError(
                    f"Row {row!r} of {metadata_file}: {column} file {path} does not exist. Add the file, fix "
                    f"`{column}_filename`, or remove the row.",
                    row=row,
                    column=column,
                )
            data[column].append(str(path.resolve()))
        data["id"].append(str(entry["id"]))
        data["text"].append(entry["caption"])
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "audio": datasets.Audio(),
            "image": datasets.Image(),
        }
    )
    return datasets.Dataset.from_dict(data, features=features)


def metadata_splits_to_dataset_dict(
    root: str | os.PathLike, *, check_files: bool = True
) -> datasets.DatasetDict:
    """Convert `root/metadata/{train,val,test}_metadata.json` with media in `root/audio/<split>/` and
    `root/images/<split>/` into a `DatasetDict` with `train`/`validation`/`test` (the files present)."""
    root = Path(root)
    splits = {}
    for name, split in METADATA_SPLITS.items():
        metadata_file = root / "metadata" / f"{name}_metadata.json"
        if metadata_file.is_file():
            splits[split] = metadata_json_to_dataset(
                metadata_file, root / "audio" / name, root / "images" / name, check_files=check_files
            )
    if not splits:
        expected = ", ".join(f"{name}_metadata.json" for name in METADATA_SPLITS)
        raise FileNotFoundError(f"{root / 'metadata'} holds none of {expected}.")
    return datasets.DatasetDict(splits)


# ------------------------------------------------------------------------------------------------ group ids
def normalise_caption(text: str) -> str:
    """Lowercase, drop punctuation and collapse whitespace: captions equal after this describe the same thing."""
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def caption_group_id(text: str) -> int:
    """A signed 64-bit id of the normalised caption, stable across processes and runs."""
    return _stable_id(normalise_caption(text))


def _stable_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big", signed=True)


# ------------------------------------------------------------------------------------------------- collator
class RetrievalCollator:
    r"""
    Turns dataset rows into a batch of a retrieval model: decodes images (to RGB) and audio (to mono, resampled to
    the processor's rate), runs the model's processor and adds `group_ids` (rows with the same normalised caption, or
    the same id when there is no text column, share an id and are never negatives of each other).

    Use it as `Trainer(data_collator=...)` with `remove_unused_columns=False`, on a dataset passed through
    `prepare_for_lazy_decoding`. It pickles, so it also works with `dataloader_num_workers > 0`.

    Args:
        processor (`CrossModalProcessor`): the model's processor.
        columns (`RetrievalColumns`): the dataset's column names.
        modalities (`Sequence[str]`, *optional*): modalities to feed; defaults to every one whose column is in the rows.
        skip_bad_rows (`bool`, defaults to `False`): drop rows that cannot be used (logging a warning naming each)
            instead of raising `BadRowError`. `num_skipped` counts them over every `DataLoader` worker: the counter
            lives in shared memory created here, so workers started from this collator add to it (a copy made
            with `pickle`/`copy` outside worker start-up gets its own counter).
        train (`bool`, defaults to `False`): augment the waveforms (random gain in [-6, +3] dB and, for clips longer
            than the processor's `audio_window_seconds`, a random window instead of the start).
        seed (`int`, defaults to 0): seed of the augmentation. The draws depend on it, on a per-process batch
            counter and, in a `DataLoader` worker, on the worker's seed (set by torch from its global seed at
            every epoch), so a run is reproducible and each epoch draws anew.
    """

    def __init__(
        self,
        processor,
        columns: RetrievalColumns | None = None,
        modalities: Sequence[str] | None = None,
        skip_bad_rows: bool = False,
        train: bool = False,
        seed: int = 0,
    ):
        self.processor = processor
        self.columns = columns if columns is not None else RetrievalColumns()
        self.modalities = tuple(modalities) if modalities is not None else None
        self.skip_bad_rows = skip_bad_rows
        self.train = train
        self.seed = seed
        self._step = 0
        self._num_skipped = multiprocessing.Value("q", 0)

    @property
    def num_skipped(self) -> int:
        """Rows dropped so far (with `skip_bad_rows=True`), in this process and its `DataLoader` workers."""
        return self._num_skipped.value

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # Shared memory only travels to processes being started (DataLoader workers); a plain copy gets its own.
        if multiprocessing.context.get_spawning_popen() is None:
            state["_num_skipped"] = self.num_skipped
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_num_skipped"], int):
            state["_num_skipped"] = multiprocessing.Value("q", state["_num_skipped"])
        self.__dict__.update(state)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("The collator received an empty list of rows.")
        modalities = _resolve(list(rows[0]), self.columns, self.modalities)
        rng = self._augmentation_rng() if self.train else None
        items, skipped = [], []
        for position, row in enumerate(rows):
            try:
                items.append(self._decode_row(row, position, modalities, rng))
            except BadRowError as error:
                if not self.skip_bad_rows:
                    raise
                logger.warning(f"Skipping a bad row: {error}")
                skipped.append(error.row)
        if skipped:
            with self._num_skipped.get_lock():
                self._num_skipped.value += len(skipped)
        if not items:
            raise BadRowError(
                f"Every row of the batch is bad (skipped {skipped}); there is nothing to train on. Check the "
                "dataset's files (see the warnings above)."
            )
        inputs: dict[str, Any] = {}
        if "text" in modalities:
            inputs["text"] = [item["text"] for item in items]
        if "audio" in modalities:
            inputs["audio"] = [item["audio"] for item in items]
            inputs["sampling_rate"] = self.processor.sampling_rate
            if "transcript" in items[0]:
                inputs["transcripts"] = [item["transcript"] for item in items]
        if "image" in modalities:
            inputs["images"] = [item["image"] for item in items]
        batch = dict(self.processor(**inputs, return_tensors="pt"))
        batch["group_ids"] = torch.tensor([item["group_id"] for item in items], dtype=torch.long)
        return batch

    # ------------------------------------------------------------------------------------------ one row
    def _decode_row(
        self, row: dict[str, Any], position: int, modalities: tuple[str, ...], rng: np.random.Generator | None
    ) -> dict[str, Any]:
        row_id = row.get(self.columns.id) if self.columns.id is not None else None
        name = f"id={row_id!r}" if row_id is not None else f"#{position} of the batch"
        label = row_id if row_id is not None else position

        def bad(column: str, cause: str, fix: str = _SKIP_HINT) -> BadRowError:
            return BadRowError(f"Row {name}, column {column!r}: {cause}. {fix}", row=label, column=column)

        item: dict[str, Any] = {}
        caption = row.get(self.columns.text) if self.columns.text is not None else None
        if "text" in modalities:
            if not isinstance(caption, str) or not caption.strip():
                raise bad(self.columns.text, f"the caption is empty ({caption!r})")
            item["text"] = caption
        if "audio" in modalities:
            item["audio"] = self._load_audio(row[self.columns.audio], self.columns.audio, bad, rng)
            if self.columns.transcript is not None and self.columns.transcript in row:
                item["transcript"] = row[self.columns.transcript] or ""
        if "image" in modalities:
            item["image"] = _load_image(row[self.columns.image], self.columns.image, bad)
        if isinstance(caption, str) and normalise_caption(caption):
            item["group_id"] = caption_group_id(caption)
        elif row_id is not None:
            item["group_id"] = _stable_id(f"id:{row_id}")
        else:  # nothing tells rows apart: each is its own group
            item["group_id"] = _stable_id(f"position:{position}")
        return item

    def _load_audio(
        self, value: Any, column: str, bad: RowError, rng: np.random.Generator | None
    ) -> np.ndarray:
        wave, rate = _decode_audio(value, column, bad)
        if wave.size == 0:
            raise bad(column, "the audio is empty (0 samples)")
        if not np.isfinite(wave).all():
            raise bad(column, "the audio contains NaN or infinite samples")
        seconds = wave.size / rate
        if seconds > self.processor.max_audio_seconds:
            raise bad(
                column,
                f"the audio lasts {seconds:.1f} s, above the processor's max_audio_seconds="
                f"{self.processor.max_audio_seconds:g}",
                "Trim or split the clip, raise `max_audio_seconds`, or pass `skip_bad_rows=True`.",
            )
        target = self.processor.sampling_rate
        if rate != target:
            wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, target).numpy()
        if rng is not None:
            window = int(round(self.processor.audio_window_seconds * target))
            if wave.size > window:
                start = int(rng.integers(0, wave.size - window + 1))
                wave = wave[start : start + window]
            wave = wave * np.float32(10 ** (rng.uniform(*GAIN_DB) / 20))
        return wave

    def _augmentation_rng(self) -> np.random.Generator:
        worker = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, worker.seed if worker is not None else 0, self._step])
        self._step += 1
        return rng


# ------------------------------------------------------------------------------------------------ transcripts
@torch.no_grad()
def add_transcripts(
    dataset: datasets.Dataset,
    model,
    processor,
    columns: RetrievalColumns | None = None,
    batch_size: int = 64,
    skip_bad_rows: bool = False,
    description: str = "Transcribing",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """
    Add the `columns.transcript` column: what the model's frozen speech recogniser hears in each row's audio
    (`model.transcribe`, greedy, on the window the audio tower sees). A model that reads transcripts would otherwise
    transcribe every batch itself; the recogniser never trains, so a dataset is transcribed once per run, and with
    `cache_dir` once for good: the transcripts are kept under `cache_dir/transcripts/`, named by the dataset's
    fingerprint, the recogniser's (its weights and decoding settings) and the processor's audio settings.

    `dataset` must carry undecoded media (see [`prepare_for_lazy_decoding`]). An existing column of that name is
    replaced. With `skip_bad_rows=True`, a row whose audio cannot be decoded gets an empty transcript (the collator
    then skips and counts it); otherwise its `BadRowError` is raised.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    columns = columns if columns is not None else RetrievalColumns()
    if columns.audio is None or columns.audio not in dataset.column_names:
        raise ValueError(
            f"add_transcripts needs the audio column {columns.audio!r}; columns: {dataset.column_names}."
        )
    if columns.transcript is None:
        raise ValueError("add_transcripts needs `RetrievalColumns.transcript`, the column to write.")
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(
            json.dumps(
                [
                    dataset._fingerprint,
                    columns.audio,
                    model.recognizer_fingerprint(),
                    processor.feature_extractor.to_json_string(),
                    skip_bad_rows,
                ]
            ).encode()
        ).hexdigest()[:24]
        cache_file = Path(cache_dir) / "transcripts" / f"{key}.json"
        if cache_file.exists():
            cached = json.loads(cache_file.read_text())
            if len(cached["transcripts"]) == len(dataset):
                logger.info(f"{description}: {len(dataset)} transcripts read from {cache_file}")
                return _with_column(dataset, columns.transcript, cached["transcripts"])
    collator = RetrievalCollator(processor, columns=columns, modalities=("audio",))
    audio_only = dataset.select_columns([c for c in (columns.audio, columns.id) if c in dataset.column_names])
    device = next(model.parameters()).device

    def transcribe(rows: list[dict[str, Any]]) -> list[str]:
        return model.transcribe(collator(rows)["input_features"].to(device))

    transcripts: list[str] = []
    loader = DataLoader(audio_only, batch_size=batch_size, collate_fn=lambda rows: rows)
    for rows in tqdm(loader, desc=description, unit="batch", leave=False):
        try:
            transcripts.extend(transcribe(rows))
        except BadRowError:
            if not skip_bad_rows:
                raise
            for row in rows:  # find the bad rows one by one; the others are transcribed
                try:
                    transcripts.extend(transcribe([row]))
                except BadRowError as error:
                    logger.warning(f"No transcript for a bad row: {error}")
                    transcripts.append("")
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_suffix(f".tmp-{os.getpid()}")
        temporary.write_text(
            json.dumps({"dataset_fingerprint": dataset._fingerprint, "transcripts": transcripts})
        )
        os.replace(temporary, cache_file)
    return _with_column(dataset, columns.transcript, transcripts)


def _with_column(dataset: datasets.Dataset, column: str, values: list) -> datasets.Dataset:
    if column in dataset.column_names:
        logger.info(f"Replacing the existing {column!r} column with the model's transcripts.")
        dataset = dataset.remove_columns(column)
    return dataset.add_column(column, values)


def _source(value: Any, column: str, bad: RowError) -> bytes | str:
    """The bytes or the path of an undecoded `Image`/`Audio` value (`{"bytes", "path"}` or a path)."""
    if isinstance(value, dict) and (value.get("bytes") is not None or value.get("path") is not None):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, str | os.PathLike):
        data, path = None, os.fspath(value)
    else:
        raise bad(column, f"expected a file path or {{'bytes', 'path'}}, got {type(value).__name__}")
    if data is not None:
        return data
    if not os.path.isfile(path):
        raise bad(column, f"the file {path} does not exist")
    return path


def _load_image(value: Any, column: str, bad: RowError) -> Image.Image:
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    source = _source(value, column, bad)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        where = "" if isinstance(source, bytes) else f" ({source})"
        raise bad(column, f"the image{where} cannot be decoded: {error}") from error


def _decode_audio(value: Any, column: str, bad: RowError) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate. Tries soundfile, then torchcodec (ffmpeg) for the formats it lacks."""
    if isinstance(value, dict) and value.get("array") is not None:
        wave, rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
        return (wave.mean(axis=0) if wave.ndim == 2 else wave), rate
    # A torchcodec AudioDecoder: a `datasets.Audio` column left with decode=True.
    if hasattr(value, "get_all_samples"):
        samples = value.get_all_samples()
        return samples.data.mean(dim=0).numpy(), int(samples.sample_rate)
    source = _source(value, column, bad)
    try:
        wave, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32")
        return (wave.mean(axis=1) if wave.ndim == 2 else wave), int(rate)
    except (sf.SoundFileError, RuntimeError, ValueError):
        pass
    from torchcodec.decoders import AudioDecoder

    try:
        samples = AudioDecoder(source).get_all_samples()
    except (RuntimeError, ValueError, OSError) as error:
        where = "" if isinstance(source, bytes) else f" ({source})"
        raise bad(column, f"the audio{where} cannot be decoded: {error}") from error
    return samples.data.mean(dim=0).numpy(), int(samples.sample_rate)


__all__ = [
    "BadRowError",
    "RetrievalCollator",
    "RetrievalColumns",
    "caption_group_id",
    "load_retrieval_dataset",
    "metadata_json_to_dataset",
    "metadata_splits_to_dataset_dict",
    "normalise_caption",
    "prepare_for_lazy_decoding",
    "resolve_columns",
]
