"""Fine-tune CMAN for cross-modal retrieval with the `transformers.Trainer`, PEFT LoRA and `accelerate`.

    accelerate launch --config_file recipes/accelerate_configs/single_process.yaml \\
        recipes/train_retrieval.py recipes/configs/cman_stamps.yaml [--num_train_epochs 3 ...]

Arguments come from a YAML file (first positional argument) and are overridden by `--flags` on the command line.
The run writes to `output_dir`: checkpoints, the final model (LoRA merged; the adapter too with `save_adapter`), its
processor and code, `eval_results.json`, `trainer_state.json`, `train_log.jsonl` and plots.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoProcessor,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

if __package__ in (None, ""):  # run as a script (e.g. by accelerate launch): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modeling  # noqa: E402,F401  (registers the families with the Auto classes)
from modeling.cman import CmanConfig, CmanModel, CmanProcessor, format_parameter_table  # noqa: E402
from modeling.cman.modeling_cman import TOWER_ATTRIBUTES  # noqa: E402
from recipes.arguments import parse_recipe_arguments  # noqa: E402
from recipes.data.retrieval import (  # noqa: E402
    CmanRetrievalCollator,
    RetrievalColumns,
    add_transcripts,
    load_retrieval_dataset,
    prepare_for_lazy_decoding,
    resolve_columns,
    transcribes_audio,
)
from recipes.evaluate_retrieval import RetrievalEvalConfig, evaluate_model, format_results  # noqa: E402
from recipes.retrieval import positives_from_ids, rank_of_positives, retrieval_metrics  # noqa: E402

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class ModelArguments:
    # Model
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A saved CMAN folder or Hub id to fine-tune (else built from the towers)."},
    )
    text_tower: str | None = field(
        default=None, metadata={"help": "Text tower: Hub id or folder (BERT/RoBERTa)."}
    )
    audio_tower: str | None = field(
        default=None, metadata={"help": "Audio tower: Hub id or folder (AST/Whisper)."}
    )
    vision_tower: str | None = field(
        default=None, metadata={"help": "Image tower: Hub id or folder (ViT/timm)."}
    )
    load_tower_weights: bool = field(
        default=True,
        metadata={"help": "Load the towers' pretrained weights; False trains the same shapes from scratch."},
    )
    tower_config_overrides: dict = field(
        default_factory=dict,
        metadata={
            "help": "Per tower ('text'/'audio'/'vision') config fields to change, e.g. smaller scratch towers."
        },
    )
    audio_window_seconds: float | None = field(default=None, metadata={"help": "Whisper encoder window (s)."})
    cman_config: dict = field(
        default_factory=dict, metadata={"help": "CmanConfig fields (fusion size, loss, ...)."}
    )
    # LoRA
    use_lora: bool = field(default=True, metadata={"help": "Adapt the frozen towers with PEFT LoRA."})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.2
    lora_towers: list[str] = field(
        default_factory=lambda: ["text", "audio", "image"],
        metadata={"help": "Towers that get LoRA; the others stay fully frozen."},
    )
    lora_last_n: int | None = field(
        default=None,
        metadata={
            "help": "Adapt only the last N target modules of each tower (the backward pass then stops there); "
            "None adapts every attention query/value projection."
        },
    )
    lora_last_n_per_tower: dict = field(
        default_factory=dict,
        metadata={
            "help": "Per tower ('text'/'audio'/'image'): overrides lora_last_n for that tower; null adapts all."
        },
    )
    save_adapter: bool = field(
        default=False, metadata={"help": "Also save the PEFT adapter in output_dir/adapter."}
    )


@dataclass
class DataArguments:
    # Dataset
    dataset_name: str = field(metadata={"help": "A folder written by save_to_disk, or a Hub dataset name."})
    dataset_config_name: str | None = None
    train_split: str = "train"
    eval_split: str | None = "validation"
    test_splits: list[str] = field(default_factory=lambda: ["test"])
    text_column: str | None = "text"
    audio_column: str | None = "audio"
    image_column: str | None = "image"
    id_column: str | None = "id"
    composed_queries: list[str] = field(default_factory=lambda: ["text+audio:image"])
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Skip (and count) undecodable rows instead of failing."}
    )
    augment_audio: bool = field(
        default=False,
        metadata={
            "help": "Random gain and window crops of training audio (resumed runs then differ from unbroken ones)."
        },
    )


@dataclass
class CmanTrainingArguments(TrainingArguments):
    # Training
    loss_warmup_steps: int = field(
        default=0,
        metadata={"help": "Steps trained with `loss_warmup` before the configured loss takes over."},
    )
    loss_warmup: str = field(
        default="all_negatives",
        metadata={"help": "'all_negatives' (max-margin over every negative) or 'infonce'."},
    )
    auto_resume: bool = field(
        default=True, metadata={"help": "Continue from the last complete checkpoint found in output_dir."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Evaluations without improvement."}
    )
    make_plots: bool = field(
        default=True, metadata={"help": "Write loss, recall, t-SNE and attention plots."}
    )
    remove_unused_columns: bool = False
    report_to: str | list[str] = "tensorboard"


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------
def _tower(path: str | None, overrides: dict, load_weights: bool):
    """A tower for `CmanConfig.from_towers`: its name (weights loaded) or a config (random weights)."""
    if path is None:
        return None
    if load_weights and not overrides:
        return path
    config = AutoConfig.from_pretrained(path)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"tower_config_overrides: {type(config).__name__} has no field {key!r}.")
        setattr(config, key, value)
    if config.model_type == "whisper":
        config.is_encoder_decoder = False
    return config


def build_model_and_processor(args: ModelArguments) -> tuple[CmanModel, CmanProcessor]:
    if args.model_name_or_path:
        model = AutoModel.from_pretrained(args.model_name_or_path, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=True)
        return model, processor
    towers = {"text": args.text_tower, "audio": args.audio_tower, "vision": args.vision_tower}
    if None in towers.values():
        raise ValueError(
            "Give `model_name_or_path`, or all of `text_tower`, `audio_tower` and `vision_tower`."
        )
    unknown = set(args.tower_config_overrides) - set(towers)
    if unknown:
        raise ValueError(
            f"tower_config_overrides keys must be among {sorted(towers)}, got {sorted(unknown)}."
        )
    config = CmanConfig.from_towers(
        **{
            m: _tower(p, args.tower_config_overrides.get(m, {}), args.load_tower_weights)
            for m, p in towers.items()
        },
        audio_window_seconds=args.audio_window_seconds,
        **args.cman_config,
    )
    model = CmanModel.from_encoders_pretrained(config) if args.load_tower_weights else CmanModel(config)
    processor = CmanProcessor.from_towers(
        towers["text"],
        towers["audio"],
        towers["vision"],
        audio_window_seconds=args.audio_window_seconds,
        transcribe_audio=config.transcribe_audio,
    )
    return model, processor


def lora_targets(
    model: CmanModel,
    towers: list[str],
    last_n: int | None = None,
    last_n_per_tower: dict[str, int | None] | None = None,
) -> list[str]:
    """LoRA target modules of the chosen towers, optionally only the last `last_n` of each (in depth order);
    `last_n_per_tower` overrides `last_n` for the towers it names (None: every target of that tower)."""
    last_n_per_tower = last_n_per_tower or {}
    for name, value in (("lora_towers", towers), ("lora_last_n_per_tower", list(last_n_per_tower))):
        unknown = set(value) - set(TOWER_ATTRIBUTES)
        if unknown:
            raise ValueError(f"{name} must be among {sorted(TOWER_ATTRIBUTES)}, got {sorted(unknown)}.")
    all_targets = model.lora_target_modules()
    targets = []
    for tower in towers:
        names = [n for n in all_targets if n.startswith(f"{TOWER_ATTRIBUTES[tower]}.")]
        n = last_n_per_tower.get(tower, last_n)
        targets += names[-n:] if n else names
    return targets


# --------------------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------------------
def unwrap_cman(model) -> CmanModel:
    """The `CmanModel` inside a DDP / PEFT wrapper."""
    while not isinstance(model, CmanModel):
        if hasattr(model, "module"):  # DistributedDataParallel
            model = model.module
        elif hasattr(model, "get_base_model"):  # PeftModel
            model = model.get_base_model()
        else:
            raise TypeError(f"Expected a CmanModel (possibly wrapped), got {type(model).__name__}.")
    return model


class CmanTrainer(Trainer):
    """`Trainer` that asks CMAN for its retrieval loss, collates evaluation batches without augmentation and refuses
    incomplete checkpoint loads."""

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator

    def get_eval_dataloader(self, eval_dataset=None):
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, return_loss=True)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _issue_warnings_after_load(self, load_result) -> None:
        # The stock Trainer loads checkpoints with strict=False and only warns: a renamed or missing tower would
        # silently keep its initial weights. Resuming must restore every weight.
        problems = {
            k: v
            for k, v in (("missing", load_result.missing_keys), ("unexpected", load_result.unexpected_keys))
            if v
        }
        if problems:
            raise RuntimeError(
                f"The checkpoint does not match the model: {problems}. Refusing a partial load."
            )


class LossWarmupCallback(TrainerCallback):
    """Train the first `steps` steps with all negatives (or InfoNCE), then the configured hardest-negative loss:
    hardest negatives from untrained features collapse the embedding space."""

    def __init__(self, steps: int, warmup: str):
        if warmup not in ("all_negatives", "infonce"):
            raise ValueError(f"loss_warmup must be 'all_negatives' or 'infonce', got {warmup!r}.")
        self.steps, self.warmup = steps, warmup
        self.final: tuple[str, str] | None = None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        config = unwrap_cman(model).config
        if self.final is None:
            self.final = (config.loss_type, config.max_margin_negatives)
        if state.global_step < self.steps:
            config.loss_type = "infonce" if self.warmup == "infonce" else "max_margin"
            config.max_margin_negatives = "all"
        else:
            config.loss_type, config.max_margin_negatives = self.final


class JsonlLogCallback(TrainerCallback):
    """Append every log record to `output_dir/train_log.jsonl` (survives a crash, unlike trainer_state.json)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(Path(args.output_dir) / "train_log.jsonl", "a") as handle:
                handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def make_compute_metrics(modalities: list[str]):
    """Retrieval metrics of the Trainer's evaluation loop: embeddings come as predictions, group ids as labels."""

    def preprocess_logits_for_metrics(logits, labels):
        # CmanOutput without `loss`: text/audio/image embeds come first, for the modalities present.
        return tuple(logits[: len(modalities)])

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

    return compute_metrics, preprocess_logits_for_metrics


# --------------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_recipe_arguments(
        (ModelArguments, DataArguments, CmanTrainingArguments), argv
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not training_args.should_log:
        logging.getLogger().setLevel(logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if training_args.should_save:
        file_handler = logging.FileHandler(output_dir / "train.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(file_handler)
    set_seed(training_args.seed)
    started = time.perf_counter()

    # Dataset
    columns = RetrievalColumns(
        text=data_args.text_column,
        audio=data_args.audio_column,
        image=data_args.image_column,
        id=data_args.id_column,
    )
    dataset = load_retrieval_dataset(data_args.dataset_name, config_name=data_args.dataset_config_name)
    for split in [data_args.train_split, data_args.eval_split, *data_args.test_splits]:
        if split is not None and split not in dataset:
            raise ValueError(f"Split {split!r} is not in {data_args.dataset_name}; it has {sorted(dataset)}.")
    train_dataset = dataset[data_args.train_split]
    if data_args.max_train_samples:
        train_dataset = train_dataset.select(range(min(data_args.max_train_samples, len(train_dataset))))
    modalities = resolve_columns(train_dataset, columns, None)
    train_dataset = prepare_for_lazy_decoding(train_dataset, columns)
    eval_dataset = None
    if data_args.eval_split:
        eval_dataset = dataset[data_args.eval_split]
        if data_args.max_eval_samples:
            eval_dataset = eval_dataset.select(range(min(data_args.max_eval_samples, len(eval_dataset))))
        eval_dataset = prepare_for_lazy_decoding(eval_dataset, columns)

    # Model
    model, processor = build_model_and_processor(model_args)
    if transcribes_audio(model) and "audio" in modalities:
        # The speech recogniser is frozen: each split is transcribed once, before training.
        transcribing = time.perf_counter()

        def transcribed(split_dataset, split: str):
            return add_transcripts(
                split_dataset,
                model,
                processor,
                columns,
                training_args.per_device_eval_batch_size,
                data_args.skip_bad_rows,
                f"Transcribing {split}",
            )

        train_dataset = transcribed(train_dataset, data_args.train_split)
        if eval_dataset is not None:
            eval_dataset = transcribed(eval_dataset, data_args.eval_split)
        logger.info(
            "Transcribed the training and validation audio in %.0f s", time.perf_counter() - transcribing
        )
    if model_args.use_lora:
        model = model.apply_lora(
            r=model_args.lora_r,
            alpha=model_args.lora_alpha,
            dropout=model_args.lora_dropout,
            target_modules=lora_targets(
                model, model_args.lora_towers, model_args.lora_last_n, model_args.lora_last_n_per_tower
            ),
        )
    logger.info("Parameters:\n%s", format_parameter_table(model))

    compute_metrics, preprocess = make_compute_metrics(list(modalities))
    training_args.label_names = ["group_ids"]
    callbacks: list[TrainerCallback] = [JsonlLogCallback()]
    if training_args.loss_warmup_steps:
        callbacks.append(LossWarmupCallback(training_args.loss_warmup_steps, training_args.loss_warmup))
    if training_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
    trainer = CmanTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=CmanRetrievalCollator(
            processor,
            columns=columns,
            skip_bad_rows=data_args.skip_bad_rows,
            train=data_args.augment_audio,
            seed=training_args.seed,
        ),
        eval_data_collator=CmanRetrievalCollator(
            processor, columns=columns, skip_bad_rows=data_args.skip_bad_rows
        ),
        compute_metrics=compute_metrics if eval_dataset is not None else None,
        preprocess_logits_for_metrics=preprocess if eval_dataset is not None else None,
        callbacks=callbacks,
    )

    resume = training_args.resume_from_checkpoint
    if resume is None and training_args.auto_resume:
        resume = last_complete_checkpoint(output_dir)
        if resume:
            logger.info("Resuming from the last complete checkpoint in output_dir: %s", resume)
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_state()
    trainer.log_metrics("train", train_result.metrics)

    results: dict = {"train": train_result.metrics}
    if trainer.is_world_process_zero():
        final = save_final_model(trainer.model, processor, output_dir, model_args)
        if data_args.test_splits:
            eval_config = RetrievalEvalConfig(
                splits=[s for s in data_args.test_splits if s in dataset],
                columns=columns,
                composed=data_args.composed_queries,
                batch_size=training_args.per_device_eval_batch_size,
            )
            final.to(training_args.device)
            results["retrieval"] = evaluate_model(final, processor, dataset, eval_config)
            payload = {
                "model": str(output_dir),
                "dataset": data_args.dataset_name,
                "batch_size": eval_config.batch_size,
                "results": results["retrieval"],
            }
            (output_dir / "eval_results.json").write_text(json.dumps(payload, indent=2) + "\n")
            print(format_results(results["retrieval"]))
        if training_args.make_plots:
            from recipes.plots import write_run_plots

            write_run_plots(
                output_dir,
                final,
                processor,
                dataset,
                data_args.test_splits[0] if data_args.test_splits else None,
                columns,
            )
        logger.info(
            "Run finished in %.0f s; model and results in %s", time.perf_counter() - started, output_dir
        )
    return results


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-N` folder that was fully written (a crash while saving leaves an incomplete one,
    which is skipped with a warning)."""
    if not output_dir.is_dir():
        return None
    required = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
    candidates = sorted(
        (p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in candidates:
        has_weights = any(
            (checkpoint / name).exists() for name in ("model.safetensors", "adapter_model.safetensors")
        )
        if has_weights and all((checkpoint / name).exists() for name in required):
            return str(checkpoint)
        logger.warning("Skipping incomplete checkpoint %s (interrupted while saving).", checkpoint)
    return None


def save_final_model(model, processor, output_dir: Path, args: ModelArguments) -> CmanModel:
    """Save a folder `AutoModel.from_pretrained(..., trust_remote_code=True)` loads, with LoRA merged into the towers
    (the PEFT adapter is kept in `output_dir/adapter` with `save_adapter`)."""
    if hasattr(model, "peft_config"):
        if args.save_adapter:
            model.save_pretrained(output_dir / "adapter")
        model = model.merge_and_unload()
    model = unwrap_cman(model)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return model


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
