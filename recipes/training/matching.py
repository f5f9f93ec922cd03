"""The `Trainer` of the matching families: one task per batch (VQA questions or matched pairs, interleaved by
[`TaskBatchSampler`] in a multi-task run), the model's own weighted loss, and each objective's loss in the logs."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from recipes.data.matching import MultiTaskDataset, TaskBatchSampler
from recipes.training.distributed import FsdpOnCpuMixin
from recipes.training.trainer import EvalCollatorMixin, StrictResumeMixin

OBJECTIVE_LOSSES = ("itc_loss", "itm_loss", "mlm_loss", "mpm_loss", "vqa_loss")


class MatchingTrainer(FsdpOnCpuMixin, EvalCollatorMixin, StrictResumeMixin, Trainer):
    """
    `Trainer` for the matching and VQA heads. The model computes its loss (the config's weighted objectives); the
    trainer logs each objective's mean since the last log line (`train/itm_loss`, ...). A [`MultiTaskDataset`] is
    served in single-task batches by a [`TaskBatchSampler`]; evaluation batches use `eval_data_collator`.
    """

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator
        self._objective_losses: dict[str, list[float]] = {}

    def get_train_dataloader(self):
        if not isinstance(self.train_dataset, MultiTaskDataset):
            return super().get_train_dataloader()
        sampler = TaskBatchSampler(self.train_dataset, self._train_batch_size, seed=self.args.seed)
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if outputs.loss is None:
            raise ValueError(
                "The batch gave no loss: a VQA batch needs `labels`, a pair batch `return_loss=True`."
            )
        if model.training:
            for name in OBJECTIVE_LOSSES:
                value = getattr(outputs, name, None)
                if value is not None:
                    self._objective_losses.setdefault(name, []).append(float(value.detach()))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if (
            self._objective_losses and "loss" in logs
        ):  # a training log line: each objective since the last one
            for name, values in self._objective_losses.items():
                logs[name] = float(np.mean(values))
            self._objective_losses = {}
        super().log(logs, *args, **kwargs)


def vqa_score_metrics(eval_prediction) -> dict[str, float]:
    """During training: the mean soft score (`min(1, #annotators / 3)`) of the top answer, a close, cheap stand-in
    for VQA accuracy (the final evaluation computes the exact leave-one-out formula)."""
    logits = eval_prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    labels = torch.as_tensor(np.asarray(eval_prediction.label_ids))
    top = torch.as_tensor(np.asarray(logits)).argmax(-1)
    return {"vqa_score": float(labels.gather(1, top[:, None]).mean())}
