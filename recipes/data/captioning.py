"""Batches for the generator family: an image or a sound with a prompt and its target text (a caption, or the answer
to a question), tokenized in the decoder's chat format with `labels` on the target only.

Three tasks share the format; a batch holds one task (one kind of media):

- `image_captioning`: a description's image, prompted with the processor's `image_prompt` ("Describe the image.");
- `audio_captioning`: a sound effect, prompted with `audio_prompt` ("Describe the sound."); rows without a sound are
  left out of this task's rows when the splits are built (`rows_with`), never inside a batch;
- `vqa`: a question about an image, the target its most common answer (open-ended: the decoder generates it).

Media are decoded here, not up front; a bad row is an error naming it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import torch
import torchaudio

from recipes.data.retrieval import (
    BadRowError,
    RetrievalColumns,
    _decode_audio,
    _load_image,
    load_retrieval_dataset,
    prepare_for_lazy_decoding,
)

GENERATION_TASKS = ("image_captioning", "audio_captioning", "vqa")
#: The media each task reads.
TASK_MEDIA = {"image_captioning": "image", "audio_captioning": "audio", "vqa": "image"}


def most_common_answer(answers: Sequence[str]) -> str:
    """VQA's `multiple_choice_answer`: the answer most annotators gave (the first of them on a tie)."""
    if not answers:
        raise ValueError("A question without answers cannot be a training target.")
    counts = Counter(answers)
    best = max(counts.values())
    return next(answer for answer in answers if counts[answer] == best)


def rows_with(dataset: datasets.Dataset, column: str) -> datasets.Dataset:
    """The rows whose `column` holds something (e.g. the stamps that have a sound effect)."""
    keep = [i for i, value in enumerate(dataset.select_columns([column])[column]) if value is not None]
    return dataset.select(keep)


def task_columns(task: str, args) -> dict:
    """The collator's columns for `task` from a `CaptioningDataArguments`."""
    if task == "vqa":
        return {"text_column": args.question_column, "answers_column": args.answers_column,
                "media_column": args.image_column}  # fmt: skip
    media = args.image_column if TASK_MEDIA[task] == "image" else args.audio_column
    return {"text_column": args.text_column, "media_column": media}


def load_task_splits(args) -> dict[str, dict]:
    """`{task: {split: dataset}}` for a `CaptioningDataArguments`, with only each task's columns and the media left
    undecoded (the collator decodes them)."""
    wanted = [s for s in (args.train_split, args.eval_split, *args.test_splits) if s]
    sources: dict[str, object] = {}
    splits: dict[str, dict] = {}
    for task in args.tasks:
        name = args.vqa_dataset_name if task == "vqa" else args.dataset_name
        if name not in sources:
            sources[name] = load_retrieval_dataset(name)
        dataset = sources[name]
        missing = [s for s in wanted if s not in dataset]
        if missing:
            raise ValueError(f"{name} has no split(s) {missing}; it has {sorted(dataset)}.")
        columns = task_columns(task, args)
        wanted_columns = [c for c in columns.values()] + [c for c in ("id", "question_id", "answer_type")
                                                           if c in dataset[args.train_split].column_names]  # fmt: skip
        absent = [c for c in wanted_columns if c not in dataset[args.train_split].column_names]
        if absent:
            raise ValueError(
                f"{name} has no column(s) {absent} for {task}; it has {dataset[args.train_split].column_names}."
            )
        media = columns["media_column"]
        layout = RetrievalColumns(text=None, audio=media if task == "audio_captioning" else None,
                                  image=None if task == "audio_captioning" else media, id=None)  # fmt: skip
        splits[task] = {}
        for split in wanted:
            part = dataset[split].select_columns(list(dict.fromkeys(wanted_columns)))
            if task == "audio_captioning":
                part = rows_with(part, media)
            splits[task][split] = prepare_for_lazy_decoding(part, layout)
    return splits


def limit_rows(dataset, count: int | None):
    """The first `count` rows (all of them when `count` is None)."""
    return dataset.select(range(min(count, len(dataset)))) if count else dataset


@dataclass
class GenerationCollator:
    """Rows of one task to the generator's inputs: prompt + target tokens (`labels` on the target), and the media.

    Args:
        processor: a `GatedXAttnProcessor`.
        task: one of `GENERATION_TASKS`.
        text_column: the caption (captioning) or the question (`vqa`).
        answers_column: the answers of a `vqa` row (the target is the most common one).
        media_column: the image or the sound effect.
        with_targets: `False` for generation (prompts and media only).
    """

    processor: object
    task: str
    text_column: str = "text"
    answers_column: str = "answers"
    media_column: str = "image"
    with_targets: bool = True

    def __post_init__(self):
        if self.task not in GENERATION_TASKS:
            raise ValueError(f"task must be one of {GENERATION_TASKS}, got {self.task!r}.")

    def prompts_and_targets(self, rows: Sequence[dict]) -> tuple[list[str] | None, list[str]]:
        if self.task == "vqa":
            prompts = [row[self.text_column] for row in rows]
            targets = [most_common_answer(row[self.answers_column]) for row in rows]
        else:
            prompts, targets = None, [row[self.text_column] for row in rows]  # the processor's default prompt
        return prompts, targets

    def media(self, rows: Sequence[dict]) -> dict:
        names = [str(row.get("id", row.get("question_id", "?"))) for row in rows]

        def bad(name):
            def error(column: str, cause: str, fix: str = "Fix or drop the row.") -> BadRowError:
                return BadRowError(f"Row {name}, column {column!r}: {cause}. {fix}", row=name, column=column)

            return error

        if TASK_MEDIA[self.task] == "image":
            return {
                "images": [
                    _load_image(row[self.media_column], self.media_column, bad(n))
                    for row, n in zip(rows, names)
                ]
            }
        rate = self.processor.sampling_rate
        waves = []
        for row, name in zip(rows, names):
            if row[self.media_column] is None:
                raise bad(name)(
                    self.media_column, "the row has no sound", "Select rows with `rows_with` first."
                )
            wave, source_rate = _decode_audio(row[self.media_column], self.media_column, bad(name))
            if wave.size == 0:
                raise bad(name)(self.media_column, "the audio is empty (0 samples)")
            if source_rate != rate:
                wave = torchaudio.functional.resample(torch.from_numpy(wave), source_rate, rate).numpy()
            waves.append(np.asarray(wave, dtype=np.float32))
        return {"audio": waves, "sampling_rate": rate}

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = [row[1] if isinstance(row, tuple) else row for row in rows]
        prompts, targets = self.prompts_and_targets(rows)
        batch = self.processor(
            text=prompts,
            targets=targets if self.with_targets else None,
            return_tensors="pt",
            **self.media(rows),
        )
        return dict(batch)


__all__ = [
    "GENERATION_TASKS",
    "GenerationCollator",
    "TASK_MEDIA",
    "limit_rows",
    "load_task_splits",
    "most_common_answer",
    "rows_with",
    "task_columns",
]
