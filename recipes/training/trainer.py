"""The `Trainer` side of retrieval training: the loss module and its warm-up schedule, reading the model's outputs by
name, validation metrics, logging and checkpoint helpers."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import Trainer, TrainerCallback

from modeling.common.losses import ContrastiveLoss, build_loss
from modeling.common.retrieval import combination_key
from recipes.evaluation.ranking import positives_from_ids, rank_of_positives, retrieval_metrics
from recipes.training.distributed import (
    FSDP_MODEL_DIR,
    FSDP_OPTIMIZER_DIR,
    FsdpOnCpuMixin,
    is_sharded_checkpoint,
)
from recipes.utils.models import MODALITIES, unwrap_model

logger = logging.getLogger(__name__)

#: Losses a warm-up can use before the model's own loss takes over.
WARMUP_LOSSES = {
    "all_negatives": lambda config: build_loss("max_margin", margin=config.margin, negatives="all"),
    "infonce": lambda config: build_loss("infonce"),
}


class LossSchedule:
    """
    Which loss module trains at each optimizer step: `warmup` for the first `warmup_steps`, then the model's own
    loss (`model.retrieval_loss()`, from its config). The model's config is never changed, so a checkpoint saved
    during the warm-up still records the loss the model is meant to train with.
    """

    def __init__(self, final: ContrastiveLoss, warmup: ContrastiveLoss | None = None, warmup_steps: int = 0):
        if warmup_steps and warmup is None:
            raise ValueError("A loss warm-up needs a warm-up loss.")
        self.final, self.warmup, self.warmup_steps = final, warmup, warmup_steps

    @classmethod
    def for_model(cls, model, warmup: str = "all_negatives", warmup_steps: int = 0) -> LossSchedule:
        if warmup not in WARMUP_LOSSES:
            raise ValueError(f"loss_warmup must be one of {tuple(WARMUP_LOSSES)}, got {warmup!r}.")
        model = unwrap_model(model)
        return cls(
            model.retrieval_loss(),
            WARMUP_LOSSES[warmup](model.config) if warmup_steps else None,
            warmup_steps,
        )

    def at(self, step: int) -> ContrastiveLoss:
        return self.warmup if step < self.warmup_steps else self.final


def loss_name(loss_module) -> str:
    """`MaxMarginLoss(hardest)`, `InfoNCELoss`: the class, and for a max-margin loss its negatives."""
    negatives = getattr(loss_module, "negatives", None)
    return type(loss_module).__name__ + (f"({negatives})" if negatives else "")


class StrictResumeMixin:
    """For a `Trainer`: resuming refuses a checkpoint that does not restore every weight."""

    def _issue_warnings_after_load(self, load_result) -> None:
        # The stock Trainer loads checkpoints with strict=False and only warns: a renamed or missing tower would
        # silently keep its initial weights. Resuming must restore every weight but the tied copies (e.g. the
        # recogniser's output matrix, stored once with its token embeddings).
        tied = set(getattr(unwrap_model(self.model), "all_tied_weights_keys", None) or {})
        missing = [
            key for key in load_result.missing_keys if key.removeprefix("base_model.model.") not in tied
        ]
        problems = {k: v for k, v in (("missing", missing), ("unexpected", load_result.unexpected_keys)) if v}
        if problems:
            raise RuntimeError(
                f"The checkpoint does not match the model: {problems}. Refusing a partial load."
            )
        if load_result.missing_keys:
            unwrap_model(self.model).tie_weights()


class EvalCollatorMixin:
    """For a `Trainer` with an `eval_data_collator` attribute: evaluation batches use it (no augmentation, or
    another task's collator) instead of `data_collator`."""

    eval_data_collator = None

    def get_eval_dataloader(self, eval_dataset=None):
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator


class RetrievalTrainer(FsdpOnCpuMixin, EvalCollatorMixin, StrictResumeMixin, Trainer):
    """
    `Trainer` for the retrieval families: the loss is a module of the training side (see [`LossSchedule`]) applied
    to the embeddings the model returns (read by name), evaluation batches are collated without augmentation, the
    evaluation loop hands the embeddings to `compute_metrics`, and partial checkpoint loads are refused.
    """

    def __init__(
        self,
        *args,
        loss_schedule: LossSchedule,
        modalities,
        eval_data_collator=None,
        composed_loss_weight=0.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.loss_schedule = loss_schedule
        self.modalities = tuple(modalities)
        self.eval_data_collator = eval_data_collator
        self.composed_loss_weight = composed_loss_weight
        # Each pair of modalities embedded together, against the third (with three modalities).
        self.composed_pairs = (
            list(itertools.combinations(self.modalities, 2))
            if composed_loss_weight and len(self.modalities) == 3
            else []
        )
        self._diagnostics: list[dict[str, float]] = []

    def _loss(self, model, inputs, step: int, training: bool = False):
        group_ids = inputs.pop("group_ids", None)
        composed = self.composed_pairs if training else []
        outputs = model(**inputs, combinations=composed) if composed else model(**inputs)
        embeds = {m: outputs[f"{m}_embeds"] for m in self.modalities}
        base = unwrap_model(model)
        scale, bias = base.inverse_temperature(), getattr(base, "logit_bias", None)
        loss_module = self.loss_schedule.at(step)
        loss = loss_module(embeds, scale, bias, group_ids)
        if training:
            self._record_diagnostics(step, loss_module.diagnostics)
        for pair in composed:
            (third,) = set(self.modalities) - set(pair)
            key = combination_key(pair)
            composed_embeds = {key: outputs.combined_embeds[key], third: embeds[third]}
            loss = loss + self.composed_loss_weight * loss_module(composed_embeds, scale, bias, group_ids)
        return loss, embeds, group_ids

    def _record_diagnostics(self, step: int, diagnostics: dict[str, float]) -> None:
        """Keep what the loss saw at this step (for the next log line) and append it to `loss_diagnostics.jsonl`."""
        self._diagnostics.append(diagnostics)
        if self.is_world_process_zero():
            with open(Path(self.args.output_dir) / "loss_diagnostics.jsonl", "a") as handle:
                handle.write(
                    json.dumps({"step": step, "loss": loss_name(self.loss_schedule.at(step)), **diagnostics})
                    + "\n"
                )

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._diagnostics and "loss" in logs:  # a training log line: the diagnostics since the last one
            for key in self._diagnostics[0]:
                logs[key] = float(np.mean([d[key] for d in self._diagnostics]))
            self._diagnostics = []
        super().log(logs, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, embeds, _ = self._loss(model, dict(inputs), self.state.global_step, training=True)
        return (loss, embeds) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, embeds, group_ids = self._loss(model, dict(inputs), self.state.global_step)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), tuple(embeds[m].detach() for m in self.modalities), group_ids


def configure_run_logging(training_args, output_dir: Path) -> None:
    """Log INFO from the main process (WARNING elsewhere) to the console and, where the run saves, to
    `output_dir/train.log`; transformers' own logs at WARNING."""
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(
        format=log_format, level=logging.INFO if training_args.should_log else logging.WARNING
    )
    transformers.utils.logging.set_verbosity_warning()
    if training_args.should_save:
        file_handler = logging.FileHandler(Path(output_dir) / "train.log")
        file_handler.setFormatter(logging.Formatter(log_format))
        logging.getLogger().addHandler(file_handler)


def default_cache_dir() -> Path:
    """`$CROSS_MODAL_ZOO_CACHE` if set, else `$XDG_CACHE_HOME/cross-modal-zoo` (`~/.cache/cross-modal-zoo`)."""
    if os.environ.get("CROSS_MODAL_ZOO_CACHE"):
        return Path(os.environ["CROSS_MODAL_ZOO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cross-modal-zoo"


class FrozenPrefixCacheCallback(TrainerCallback):
    """Save the frozen-prefix states computed so far at the end of every epoch (a crash keeps them) and log how
    often the cache was read."""

    def __init__(self, cache):
        self.cache = cache

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.cache.save()
            for namespace, stats in self.cache.summary().items():
                logger.info("Frozen-prefix cache %s: %s", namespace, stats)


class JsonlLogCallback(TrainerCallback):
    """Append every log record to `output_dir/train_log.jsonl` (survives a crash, unlike trainer_state.json)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(Path(args.output_dir) / "train_log.jsonl", "a") as handle:
                handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def make_compute_metrics(modalities):
    """Retrieval metrics of the Trainer's evaluation loop: the embeddings of each modality (in `modalities` order)
    come as predictions, the group ids as labels. R@1/5/10 and ranks for every direction, and their `mean_recall`."""
    modalities = [m for m in MODALITIES if m in modalities]

    def compute_metrics(eval_prediction) -> dict[str, float]:
        embeds = {m: torch.from_numpy(np.asarray(e)) for m, e in zip(modalities, eval_prediction.predictions)}
        ids = torch.from_numpy(np.asarray(eval_prediction.label_ids)).long()
        metrics, recalls = {}, []
        for query in modalities:
            for gallery in modalities:
                if query == gallery:
                    continue
                ranks = rank_of_positives(embeds[query], embeds[gallery], positives_from_ids(ids, ids))
                for key, value in retrieval_metrics(ranks).items():
                    metrics[f"{query}_to_{gallery}_{key}"] = value
                recalls += [metrics[f"{query}_to_{gallery}_R@{k}"] for k in (1, 5, 10)]
        metrics["mean_recall"] = float(np.mean(recalls))
        return metrics

    return compute_metrics


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-N` folder that was fully written (a crash while saving leaves an incomplete one,
    which is skipped with a warning)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    required = ("trainer_state.json", "scheduler.pt")
    candidates = sorted(
        (p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in candidates:
        if is_sharded_checkpoint(checkpoint):  # FSDP: a folder of model shards, another of optimizer shards
            has_weights = _complete_dcp(checkpoint / FSDP_MODEL_DIR)
            has_optimizer = _complete_dcp(checkpoint / FSDP_OPTIMIZER_DIR)
        elif (checkpoint / "latest").exists():  # DeepSpeed writes `latest` (naming its step folder) last
            has_weights = has_optimizer = (checkpoint / (checkpoint / "latest").read_text().strip()).is_dir()
        else:
            has_weights = any(
                (checkpoint / name).exists() for name in ("model.safetensors", "adapter_model.safetensors")
            )
            has_optimizer = (checkpoint / "optimizer.pt").exists()
        if (
            has_weights
            and has_optimizer
            and all((checkpoint / name).exists() for name in required)
            and _readable_json(checkpoint / "trainer_state.json")  # written last, not atomically
        ):
            return str(checkpoint)
        logger.warning("Skipping incomplete checkpoint %s (interrupted while saving).", checkpoint)
    return None


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def _complete_dcp(folder: Path) -> bool:
    """A `torch.distributed.checkpoint` folder is complete once its `.metadata` is written (the last file)."""
    return (folder / ".metadata").is_file()


def save_final_model(model, processor, output_dir: Path, save_adapter: bool = False):
    """Save a folder `AutoModel.from_pretrained(..., trust_remote_code=True)` loads, with LoRA merged into the towers
    (the PEFT adapter is kept in `output_dir/adapter` with `save_adapter`). Returns the plain model."""
    if hasattr(model, "peft_config"):
        if save_adapter:
            model.save_pretrained(Path(output_dir) / "adapter")
        model = model.merge_and_unload()
    model = unwrap_model(model)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return model


def run_training(trainer: Trainer, output_dir: Path, prefix_cache=None):
    """Train (with `auto_resume`, from the last complete checkpoint in `output_dir` unless `resume_from_checkpoint`
    is given), stop reading the frozen-prefix cache, save the trainer state and the train metrics. Returns the
    `TrainOutput` and the training's wall time in seconds."""
    args = trainer.args
    resume = args.resume_from_checkpoint
    if resume is None and getattr(args, "auto_resume", False):
        resume = last_complete_checkpoint(output_dir)
        if resume:
            logger.info("Resuming from the last complete checkpoint in output_dir: %s", resume)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    if prefix_cache is not None:
        unwrap_model(trainer.model).enable_frozen_prefix_cache(None)
    trainer.save_state()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    return result, seconds
