"""Batches for the matching families: VQA questions with their answer soft scores, matched text-image (or text-audio)
pairs with masked text for `mlm`, and a batch sampler that interleaves the two tasks.

Every batch holds one task. A VQA batch has `input_ids` / `attention_mask` (the questions), `pixel_values` and
`labels` (VQA soft scores over the answer vocabulary); a pair batch has the descriptions, the images (or clips),
`group_ids` (rows describing the same thing are not negatives) and `mlm_input_ids` / `mlm_labels` from
`DataCollatorForLanguageModeling`, plus `return_loss=True`. Media are decoded here, not up front.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from transformers import DataCollatorForLanguageModeling

from recipes.data.retrieval import BadRowError, caption_group_id
from recipes.data.vqa import soft_scores

logger = logging.getLogger(__name__)

TASKS = ("vqa", "matching")
#: The plain grey a question-only baseline sees instead of the image (the processor normalises it to ~0).
BLANK_GREY = (128, 128, 128)


def soft_score_targets(answers: Sequence[str], label2id: dict[str, int]) -> torch.Tensor:
    """VQA v2 soft scores `(num_labels,)`: `min(1, #annotators who gave the answer / 3)` for each answer in the
    vocabulary (the training target of ViLT and the bottom-up top-down VQA models); answers outside it score 0."""
    target = torch.zeros(len(label2id))
    for index, score in soft_scores(answers, label2id).items():
        target[index] = score
    return target


def _image(value, column: str, row_id: str) -> Image.Image:
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        import io

        try:
            image = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
            image.load()
        except Exception as error:  # noqa: BLE001  (PIL raises many kinds)
            raise BadRowError(
                f"Row {row_id}: the {column!r} column holds an image that cannot be decoded ({error}). Fix or drop "
                "the row."
            ) from error
    else:
        raise BadRowError(f"Row {row_id}: the {column!r} column holds no image ({type(value).__name__}).")
    return image.convert("RGB")


@dataclass
class VqaCollator:
    """Questions and images to model inputs, with `labels` (soft scores over `label2id`). With `question_only`,
    every image is replaced by a plain grey one: the question-only baseline of the same model."""

    processor: object
    label2id: dict[str, int]
    question_column: str = "question"
    answers_column: str = "answers"
    image_column: str = "image"
    question_only: bool = False

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = [row[1] if isinstance(row, tuple) else row for row in rows]
        questions = [row[self.question_column] for row in rows]
        if self.question_only:
            images = [Image.new("RGB", (224, 224), BLANK_GREY) for _ in rows]
        else:
            images = [
                _image(row[self.image_column], self.image_column, row.get("question_id", "?")) for row in rows
            ]
        batch = dict(self.processor(text=questions, images=images, return_tensors="pt"))
        batch["labels"] = torch.stack(
            [soft_score_targets(row[self.answers_column], self.label2id) for row in rows]
        )
        return batch


@dataclass
class PairCollator:
    """Matched pairs (a description with its image, or its audio clip) for the pair objectives: the processor's
    inputs, `group_ids`, and the text masked for `mlm` by `DataCollatorForLanguageModeling`."""

    processor: object
    text_column: str = "text"
    other_column: str = "image"
    other_modality: str = "image"
    mlm_probability: float = 0.15
    seed: int = 0

    def __post_init__(self):
        self.masker = DataCollatorForLanguageModeling(
            self.processor.tokenizer, mlm=True, mlm_probability=self.mlm_probability, return_tensors="pt"
        )

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = [row[1] if isinstance(row, tuple) else row for row in rows]
        texts = [row[self.text_column] for row in rows]
        if self.other_modality == "image":
            others = {
                "images": [
                    _image(row[self.other_column], self.other_column, row.get("id", "?")) for row in rows
                ]
            }
        else:
            waves = [row[self.other_column] for row in rows]
            others = {
                "audio": [np.asarray(w["array"], dtype=np.float32) for w in waves],
                "sampling_rate": waves[0]["sampling_rate"],
            }
        batch = dict(self.processor(text=texts, return_tensors="pt", **others))
        batch["group_ids"] = torch.tensor([caption_group_id(text) for text in texts])
        masked = self.masker.torch_mask_tokens(batch["input_ids"].clone())
        mask = batch["attention_mask"].bool()
        batch["mlm_input_ids"] = masked[0]
        batch["mlm_labels"] = masked[1].masked_fill(~mask, -100)
        batch["return_loss"] = True
        return batch


class MultiTaskDataset(Dataset):
    """Several datasets behind one index: item `i` is `(task, row)`; `offsets[task]` is where a task starts."""

    def __init__(self, tasks: dict[str, datasets.Dataset]):
        self.tasks = dict(tasks)
        self.offsets, start = {}, 0
        for task, dataset in self.tasks.items():
            self.offsets[task] = start
            start += len(dataset)
        self.length = start

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        for task, dataset in reversed(self.tasks.items()):
            if index >= self.offsets[task]:
                return task, dataset[index - self.offsets[task]]
        raise IndexError(index)

    def task_of(self, index: int) -> str:
        return next(t for t in reversed(self.tasks) if index >= self.offsets[t])


class TaskBatchSampler(Sampler[list[int]]):
    """
    Batches of one task each, interleaved: every epoch, each task's rows are shuffled and cut into batches (the last
    short one dropped), and all the batches of all tasks are shuffled together, so each task is seen in proportion
    to its size and weighted by the model's loss weights. Deterministic in `(seed, epoch)`; `set_epoch` moves on.
    """

    def __init__(self, dataset: MultiTaskDataset, batch_size: int, seed: int = 0):
        self.dataset, self.batch_size, self.seed, self.epoch = dataset, batch_size, seed, 0
        for task, data in dataset.tasks.items():
            if len(data) < batch_size:
                raise ValueError(
                    f"The {task!r} task has {len(data)} rows, fewer than one batch of {batch_size}."
                )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        generator = random.Random(f"{self.seed}:{self.epoch}")
        batches = []
        for task, data in self.dataset.tasks.items():
            rows = list(range(len(data)))
            generator.shuffle(rows)
            offset = self.dataset.offsets[task]
            batches += [
                [offset + r for r in rows[start : start + self.batch_size]]
                for start in range(0, len(rows) - self.batch_size + 1, self.batch_size)
            ]
        generator.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return sum(len(data) // self.batch_size for data in self.dataset.tasks.values())


@dataclass
class MultiTaskCollator:
    """Hands each batch to its task's collator (a batch never mixes tasks)."""

    collators: dict[str, object]

    def __call__(self, items: Sequence[tuple[str, dict]]) -> dict[str, torch.Tensor]:
        tasks = {task for task, _ in items}
        if len(tasks) != 1:
            raise ValueError(f"A batch mixes tasks {sorted(tasks)}; use TaskBatchSampler.")
        return self.collators[tasks.pop()]([row for _, row in items])
