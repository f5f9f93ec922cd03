"""The captioning service behind the captioning / VQA Space: a generator of the zoo (the gated cross-attention family,
or any folder `AutoModelForImageTextToText` loads with the zoo's processor) that captions an image, answers a question
about an image and captions a sound, greedily; uploads are checked by `recipes.serving.inputs` first, and examples to
try are taken from a dataset split."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recipes.serving.inputs import QueryError, load_audio, load_image

logger = logging.getLogger(__name__)

#: Longest question accepted, in characters (the processor keeps the last 128 tokens of a prompt).
MAX_QUESTION_CHARS = 300
#: Questions of the VQA examples (the commonest of the stamps VQA set).
EXAMPLE_QUESTIONS = ("What is this?", "What colour is the background?", "Is this an animal?")
EXAMPLES_FORMAT = 1


@dataclass
class Generation:
    task: str  # "caption_image", "answer_question" or "caption_sound"
    prompt: str  # what the model was asked
    text: str  # what it generated (special tokens dropped, stripped)
    tokens: int  # how many tokens it generated before the end of its turn
    seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass
class Examples:
    """Media of a dataset split written as files a page can show: `images` (PNG paths), `sounds` (WAV paths) and
    `references` (the description of each sound), for one-click examples."""

    folder: Path | None = None
    images: list[str] = field(default_factory=list)
    sounds: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)

    @property
    def questions(self) -> list[list[str]]:
        """`[image, question]` rows: each example image with one of `EXAMPLE_QUESTIONS`."""
        return [[image, EXAMPLE_QUESTIONS[i % len(EXAMPLE_QUESTIONS)]] for i, image in enumerate(self.images)]


class CaptioningService:
    """Load a generator (folder or Hub id) and its processor once; caption images and sounds and answer questions.
    Thread-safe: one generation runs at a time on the model (two at once on two CPU cores only slow each other
    down); the web server queues the rest.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        dataset_path: str | os.PathLike | None = None,
        split: str = "test",
        cache_dir: str | os.PathLike | None = None,
        *,
        image_column: str = "image",
        audio_column: str = "sound_effect",
        text_column: str = "text",
        num_examples: int = 3,
        max_new_tokens: int = 24,
    ):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from recipes.training.trainer import default_cache_dir

        started = time.perf_counter()
        self.model_name_or_path = str(model_name_or_path)
        folder = Path(model_name_or_path)
        if folder.is_dir() and not (folder / "config.json").exists():  # e.g. a training run still under way
            raise FileNotFoundError(
                f"{model_name_or_path} holds no saved model (no config.json): wait for its training run to finish, "
                "or pass --model with a saved folder or Hub id."
            )
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.model_name_or_path, trust_remote_code=True
            ).eval()
            self.processor = AutoProcessor.from_pretrained(self.model_name_or_path, trust_remote_code=True)
        except (OSError, ValueError) as error:  # no such folder or Hub id; not a model folder
            raise FileNotFoundError(
                f"Cannot load a generator from {model_name_or_path!r}: {error}. Train one first (recipes/"
                "train_captioning.py writes outputs/captioning/gated_xattn) or pass --model with a saved folder or "
                "Hub id."
            ) from error
        if not 1 <= max_new_tokens <= 256:
            raise ValueError(f"max_new_tokens must be between 1 and 256, not {max_new_tokens}.")
        self.max_new_tokens = int(max_new_tokens)
        self.max_audio_seconds = float(getattr(self.processor, "max_audio_seconds", 60.0))
        self.audio_window_seconds = float(
            getattr(self.processor, "audio_window_seconds", self.max_audio_seconds)
        )
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "spaces"
        self.examples = Examples()
        if dataset_path:
            self.examples = load_or_write_examples(
                dataset_path, split, self.cache_dir, image_column, audio_column, text_column, num_examples
            )
        self._lock = threading.Lock()
        self.ready_seconds = time.perf_counter() - started
        logger.info(
            "Ready in %.0f s: %s reads %s; %d image and %d sound examples",
            self.ready_seconds,
            self.model_name_or_path,
            " and ".join(self.modalities),
            len(self.examples.images),
            len(self.examples.sounds),
        )

    @property
    def modalities(self) -> list[str]:
        """The media the model reads ("image", "audio")."""
        return [m for m in ("image", "audio") if getattr(self.model.config, f"{m}_config", None) is not None]

    # ------------------------------------------------------------------------------------------------ requests
    def caption_image(self, image_path: str | None) -> Generation:
        """The caption of the image file (the processor's default image prompt). `QueryError` for a missing or
        unreadable image."""
        image = self._image(image_path, "Upload an image to caption (PNG, JPEG, WebP, GIF or BMP).")
        return self._generate("caption_image", self.processor.image_prompt, images=[image], text=None)

    def answer(self, image_path: str | None, question: str | None) -> Generation:
        """The answer to `question` about the image file. `QueryError` for a missing or unreadable image, or an empty
        or overlong question."""
        question = " ".join((question or "").split())
        if not question:
            raise QueryError(f"Type a question about the image, e.g. “{EXAMPLE_QUESTIONS[1]}”")
        if len(question) > MAX_QUESTION_CHARS:
            raise QueryError(
                f"The question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}: ask a shorter "
                "one."
            )
        image = self._image(
            image_path, "Upload the image the question is about (PNG, JPEG, WebP, GIF or BMP)."
        )
        return self._generate("answer_question", question, images=[image], text=[question])

    def caption_sound(self, audio_path: str | None) -> Generation:
        """The caption of the audio file (the processor's default sound prompt). `QueryError` for a missing, empty,
        silent, undecodable or overlong clip."""
        if "audio" not in self.modalities:
            raise QueryError(f"This model does not hear sounds; it reads {', '.join(self.modalities)}.")
        if not audio_path:
            raise QueryError("Record or upload a sound to caption (WAV, FLAC, Ogg, MP3 or M4A).")
        wave, rate = load_audio(audio_path, self.max_audio_seconds)
        notes = []
        seconds = wave.size / rate
        if seconds > self.audio_window_seconds + 1e-3:
            notes.append(
                f"The model hears the first {self.audio_window_seconds:g} s of this {seconds:.1f} s clip."
            )
        generation = self._generate(
            "caption_sound", self.processor.audio_prompt, audio=[wave], sampling_rate=rate, text=None
        )
        generation.notes[:0] = notes
        return generation

    # ---------------------------------------------------------------------------------------------- internals
    def _image(self, image_path: str | None, missing: str):
        if "image" not in self.modalities:
            raise QueryError(f"This model does not see images; it reads {', '.join(self.modalities)}.")
        if not image_path:
            raise QueryError(missing)
        return load_image(image_path)

    def _generate(self, task: str, prompt: str, **media) -> Generation:
        inputs = self.processor(**media, return_tensors="pt")
        started = time.perf_counter()
        with self._lock, torch.inference_mode():
            generated = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=self.processor.end_of_turn_id,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        seconds = time.perf_counter() - started
        new_tokens = generated[0, inputs["input_ids"].shape[1] :]
        ended = (new_tokens == self.processor.end_of_turn_id).nonzero()
        count = int(ended[0, 0]) if len(ended) else len(new_tokens)
        text = self.processor.batch_decode(new_tokens[None], skip_special_tokens=True)[0].strip()
        notes = []
        if count >= self.max_new_tokens:
            notes.append(f"Stopped at the limit of {self.max_new_tokens} tokens.")
        if not text:
            notes.append("The model generated no words.")
        return Generation(task, prompt, text, count, seconds, notes)


# -------------------------------------------------------------------------------------------------- examples
def load_or_write_examples(
    dataset_path: str | os.PathLike,
    split: str,
    cache_dir: str | os.PathLike,
    image_column: str = "image",
    audio_column: str = "sound_effect",
    text_column: str = "text",
    count: int = 3,
) -> Examples:
    """`count` images and `count` sounds (rows whose `audio_column` is not empty) of the split, spread over it, as
    PNG / WAV files under `cache_dir`; written once per (dataset fingerprint, columns, count) and read back after."""
    from recipes.data.retrieval import load_retrieval_dataset

    dataset = load_retrieval_dataset(str(dataset_path))
    if split not in dataset:
        raise ValueError(f"Split {split!r} is not in {dataset_path}; it has {sorted(dataset)}.")
    dataset = dataset[split]
    key = hashlib.sha256(
        json.dumps(
            [
                EXAMPLES_FORMAT,
                dataset._fingerprint,
                len(dataset),
                image_column,
                audio_column,
                text_column,
                count,
            ]
        ).encode()
    ).hexdigest()[:20]
    folder = Path(cache_dir) / f"captioning-examples-{split}-{key}"
    if (folder / "examples.json").exists():
        return _examples_in(folder)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    saved = _write_examples(dataset, staging, image_column, audio_column, text_column, count)
    (staging / "examples.json").write_text(json.dumps(saved, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)  # a crash while writing never leaves half the examples behind
    logger.info(
        "Wrote %d image and %d sound examples to %s", len(saved["images"]), len(saved["sounds"]), folder
    )
    return _examples_in(folder)


def _examples_in(folder: Path) -> Examples:
    saved = json.loads((folder / "examples.json").read_text())
    return Examples(
        folder,
        [str(folder / name) for name in saved["images"]],
        [str(folder / name) for name in saved["sounds"]],
        saved["references"],
    )


def _write_examples(dataset, folder: Path, image_column, audio_column, text_column, count: int) -> dict:
    import soundfile

    from recipes.data.retrieval import (
        BadRowError,
        RetrievalColumns,
        _decode_audio,
        _load_image,
        prepare_for_lazy_decoding,
    )

    def bad(column: str, cause: str) -> BadRowError:
        return BadRowError(
            f"Cannot read row {row} ({column}) for an example: {cause}.", row=row, column=column
        )

    columns = [c for c in (image_column, audio_column, text_column) if c in dataset.column_names]
    lazy = prepare_for_lazy_decoding(
        dataset.select_columns(columns),
        RetrievalColumns(
            text=text_column,
            audio=audio_column if audio_column in columns else None,
            image=image_column if image_column in columns else None,
        ),
    )
    saved: dict = {"images": [], "sounds": [], "references": []}
    if image_column in columns:
        rows = [(i * 7) % len(lazy) for i in range(min(count, len(lazy)))]
        for row in dict.fromkeys(rows):
            value = lazy[row][image_column]
            if value is not None:
                _load_image(value, image_column, bad).save(folder / f"image-{row}.png")
                saved["images"].append(f"image-{row}.png")
    else:
        logger.warning("The dataset has no %r column: no image examples.", image_column)
    if audio_column in columns:
        present = [row for row, value in enumerate(lazy[audio_column]) if value is not None]
        rows = [present[(i * 7) % len(present)] for i in range(min(count, len(present)))]
        for row in dict.fromkeys(rows):
            record = lazy[row]
            wave, rate = _decode_audio(record[audio_column], audio_column, bad)
            soundfile.write(folder / f"sound-{row}.wav", wave, rate)
            saved["sounds"].append(f"sound-{row}.wav")
            saved["references"].append(str(record.get(text_column) or ""))
    else:
        logger.warning("The dataset has no %r column: no sound examples (see --audio_column).", audio_column)
    return saved


__all__ = ["CaptioningService", "EXAMPLE_QUESTIONS", "Examples", "Generation", "MAX_QUESTION_CHARS"]
