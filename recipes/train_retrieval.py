"""Fine-tune a retrieval model (any family of the zoo: `model_type` in the YAML) with the `transformers.Trainer`, PEFT
LoRA and `accelerate`.

    accelerate launch --config_file recipes/accelerate_configs/single_process.yaml \\
        recipes/train_retrieval.py recipes/configs/cman_stamps.yaml [--num_train_epochs 3 ...]

Arguments come from a YAML file (first positional argument) and are overridden by `--flags` on the command line.
The run writes to `output_dir`: checkpoints, the final model (LoRA merged; the adapter too with `save_adapter`), its
processor and code, `eval_results.json`, `run_config.json`, `trainer_state.json`, `train_log.jsonl`, plots and the
model card (`README.md`). With `--push_to_hub` (and `--hub_model_id owner/name`), the finished folder is published
as `recipes/publish.py` does it (the token is checked before training starts).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from transformers import EarlyStoppingCallback, set_seed

if __package__ in (None, ""):  # run as a script (e.g. by accelerate launch): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling.common.towers import FrozenPrefixCache, describe_frozen_prefix  # noqa: E402
from recipes.data.retrieval import (  # noqa: E402
    RetrievalCollator,
    add_transcripts,
    load_retrieval_dataset,
    prepare_for_lazy_decoding,
    resolve_columns,
)
from recipes.data.streaming import streaming_splits  # noqa: E402
from recipes.evaluation.retrieval import RetrievalEvalConfig, evaluate_model, format_results  # noqa: E402
from recipes.hub import check_can_publish, publish_run  # noqa: E402
from recipes.training.arguments import DataArguments, ModelArguments, RetrievalTrainingArguments  # noqa: E402
from recipes.training.distributed import frozen_prefix_cache_allowed, gather_full_model  # noqa: E402
from recipes.training.model import build_model_and_processor, lora_targets  # noqa: E402
from recipes.training.trainer import (  # noqa: E402  # noqa: E402
    FrozenPrefixCacheCallback,
    JsonlLogCallback,
    LossSchedule,
    RetrievalTrainer,
    configure_run_logging,
    default_cache_dir,
    last_complete_checkpoint,
    make_compute_metrics,
    save_final_model,
)
from recipes.utils.arguments import parse_recipe_arguments  # noqa: E402
from recipes.utils.hardware import choose_precision  # noqa: E402
from recipes.utils.models import transcribes_audio, unwrap_model  # noqa: E402
from recipes.utils.run_lock import RunLock  # noqa: E402

logger = logging.getLogger(__name__)


#: Command-line flags whose values never go into run_config.json (which is published with the model).
SECRET_FLAGS = ("--hub_token",)


def redact_secrets(arguments: list[str]) -> list[str]:
    """The arguments with the values of `SECRET_FLAGS` replaced by `***` (`--flag value` and `--flag=value`)."""
    redacted, hide_next = [], False
    for argument in arguments:
        if hide_next:
            redacted.append("***")
            hide_next = False
        elif argument in SECRET_FLAGS:
            redacted.append(argument)
            hide_next = True
        elif argument.split("=", 1)[0] in SECRET_FLAGS and "=" in argument:
            redacted.append(argument.split("=", 1)[0] + "=***")
        else:
            redacted.append(argument)
    return redacted


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_recipe_arguments(
        (ModelArguments, DataArguments, RetrievalTrainingArguments), argv
    )
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    command = ["recipes/train_retrieval.py", *redact_secrets(sys.argv[1:] if argv is None else argv)]
    if training_args.process_index != 0:  # the main process holds the folder for all of them
        return _train(model_args, data_args, training_args, command)
    # One run per output folder: a second run (or a `make demo` beside a run whose launcher was killed) is refused
    # instead of training beside it into the same checkpoints and logs.
    with RunLock(output_dir, command):
        return _train(model_args, data_args, training_args, command)


def _train(model_args, data_args, training_args, command: list[str]) -> dict:
    output_dir = Path(training_args.output_dir)
    configure_run_logging(training_args, output_dir)
    set_seed(training_args.seed)
    started = time.perf_counter()
    phases: dict[str, float] = {}  # wall seconds per phase of the run, written to run_timings.json
    cache_dir = Path(training_args.cache_dir) if training_args.cache_dir else default_cache_dir()
    training_args.bf16, precision = choose_precision(training_args.precision, training_args.device.type)
    # The Trainer's accelerator reads `mixed_precision`, which TrainingArguments derived from `bf16` when parsed.
    training_args.mixed_precision = "bf16" if training_args.bf16 else "no"
    logger.info("Training precision: %s", precision)
    # Publishing is this recipe's last step (the Trainer would push every checkpoint): check the token now, not
    # after training.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    hub_model_id = training_args.hub_model_id or output_dir.resolve().name
    if push_to_hub:
        if not data_args.test_splits:
            raise ValueError(
                "--push_to_hub publishes the tested model: give --test_splits (the card reports them)."
            )
        check_can_publish(training_args.hub_token, verify=True)

    # Dataset
    columns = data_args.retrieval_columns()
    if data_args.streaming:
        # The training split is streamed (each process reads its own part); the evaluation splits are small and
        # held in memory.
        dataset, train_dataset, train_rows = streaming_splits(
            data_args,
            seed=training_args.seed,
            rank=training_args.process_index,
            world_size=training_args.world_size,
        )
        if training_args.max_steps <= 0:
            per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
            steps_per_epoch = math.ceil(train_rows / training_args.world_size / per_step)
            training_args.max_steps = math.ceil(training_args.num_train_epochs * steps_per_epoch)
            logger.info(
                "Streaming %d training rows: %d steps per epoch, max_steps=%d.",
                train_rows, steps_per_epoch, training_args.max_steps,
            )  # fmt: skip
        training_args.accelerator_config.dispatch_batches = False  # each process reads its own rows
    else:
        dataset = load_retrieval_dataset(data_args.dataset_name, config_name=data_args.dataset_config_name)
        for split in [data_args.train_split, data_args.eval_split, *data_args.test_splits]:
            if split is not None and split not in dataset:
                raise ValueError(
                    f"Split {split!r} is not in {data_args.dataset_name}; it has {sorted(dataset)}."
                )
        train_dataset = dataset[data_args.train_split]
        if data_args.max_train_samples:
            train_dataset = train_dataset.select(range(min(data_args.max_train_samples, len(train_dataset))))
        train_rows = len(train_dataset)
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
    if transcribes_audio(model) and "audio" in modalities and data_args.streaming:
        raise ValueError(
            "This model transcribes its audio before training, which needs the whole training split: train it "
            "without --streaming, or with a model whose config has transcribe_audio=false."
        )
    if transcribes_audio(model) and "audio" in modalities:
        # The speech recogniser is frozen: each split is transcribed once, before training.
        transcribing = time.perf_counter()
        batch_size, skip = training_args.per_device_eval_batch_size, data_args.skip_bad_rows
        train_dataset = add_transcripts(
            train_dataset,
            model,
            processor,
            columns,
            batch_size,
            skip,
            f"Transcribing {data_args.train_split}",
            cache_dir=cache_dir,
        )
        if eval_dataset is not None:
            eval_dataset = add_transcripts(
                eval_dataset,
                model,
                processor,
                columns,
                batch_size,
                skip,
                f"Transcribing {data_args.eval_split}",
                cache_dir=cache_dir,
            )
        phases["transcribe_train_and_validation"] = time.perf_counter() - transcribing
        logger.info(
            "Transcribed the training and validation audio in %.0f s",
            phases["transcribe_train_and_validation"],
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
    parameter_table = model.parameter_table()
    logger.info("Parameters:\n%s", parameter_table)
    trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run_config = {
        "command": command,
        "working_directory": os.getcwd(),  # the command's relative paths (towers, dataset) start here
        "model": asdict(model_args),
        "data": asdict(data_args),
        "training": {
            **{key: value for key, value in training_args.to_dict().items() if not key.startswith("hub_")},
            "world_size": training_args.world_size,
            "precision_used": precision,
        },
        "split_sizes": {data_args.train_split: train_rows}
        | ({data_args.eval_split: len(eval_dataset)} if eval_dataset is not None else {}),
        "parameter_table": parameter_table,
        "trainable_parameters": trainable_parameters,
        "device": str(training_args.device),
    }
    prefix_cache = None
    if frozen_prefix_cache_allowed(training_args):
        # Only what no trainable parameter touches: the layers below each tower's first LoRA (or trainable) layer.
        prefix_cache = FrozenPrefixCache(cache_dir / "frozen_prefix")
        unwrap_model(model).enable_frozen_prefix_cache(prefix_cache)
        for modality, tower in unwrap_model(model).towers().items():
            logger.info("Frozen prefix cached for the %s tower: %s", modality, describe_frozen_prefix(tower))

    # Training
    training_args.label_names = ["group_ids"]
    train_collator = RetrievalCollator(
        processor, columns=columns, skip_bad_rows=data_args.skip_bad_rows, train=data_args.augment_audio,
        seed=training_args.seed,
    )  # fmt: skip
    eval_collator = RetrievalCollator(processor, columns=columns, skip_bad_rows=data_args.skip_bad_rows)
    callbacks = [JsonlLogCallback()]
    if prefix_cache is not None:
        callbacks.append(FrozenPrefixCacheCallback(prefix_cache))
    if training_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
    trainer = RetrievalTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        compute_metrics=make_compute_metrics(modalities) if eval_dataset is not None else None,
        callbacks=callbacks,
        loss_schedule=LossSchedule.for_model(
            model, training_args.loss_warmup, training_args.loss_warmup_steps
        ),
        modalities=modalities,
        composed_loss_weight=training_args.composed_loss_weight,
    )
    logger.info("Mixed precision of the training loop: %s", trainer.accelerator.mixed_precision)
    resume = training_args.resume_from_checkpoint
    if resume is None and training_args.auto_resume:
        resume = last_complete_checkpoint(output_dir)
        if resume:
            logger.info("Resuming from the last complete checkpoint in output_dir: %s", resume)
    training = time.perf_counter()
    train_result = trainer.train(resume_from_checkpoint=resume)
    phases["train"] = time.perf_counter() - training
    train_result.metrics["trainable_parameters"] = trainable_parameters
    if data_args.skip_bad_rows:
        train_result.metrics["skipped_bad_rows"] = train_collator.num_skipped + eval_collator.num_skipped
        logger.warning(
            "Skipped %d bad row(s) in training and validation.", train_result.metrics["skipped_bad_rows"]
        )
    if prefix_cache is not None:
        unwrap_model(trainer.model).enable_frozen_prefix_cache(
            None
        )  # the final evaluation computes everything
        summary = prefix_cache.summary()
        train_result.metrics["frozen_prefix_hits"] = sum(stats["hits"] for stats in summary.values())
        train_result.metrics["frozen_prefix_misses"] = sum(stats["misses"] for stats in summary.values())
        if trainer.is_world_process_zero():
            (output_dir / "frozen_prefix_cache.json").write_text(json.dumps(summary, indent=2) + "\n")
    run_config["train_runtime_seconds"] = phases["train"]
    if trainer.is_world_process_zero():
        (output_dir / "run_config.json").write_text(json.dumps(run_config, indent=2, default=str) + "\n")
    trainer.save_state()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)

    # Evaluation, on the saved model
    results: dict = {"train": train_result.metrics}
    full_model = gather_full_model(trainer)  # every rank: under FSDP the shards are gathered to the main one
    if trainer.is_world_process_zero():
        final = save_final_model(full_model, processor, output_dir, model_args.save_adapter)
        testing = time.perf_counter()
        if data_args.test_splits:
            eval_config = RetrievalEvalConfig(
                splits=list(data_args.test_splits),
                columns=columns,
                composed=data_args.composed_queries,
                batch_size=training_args.per_device_eval_batch_size,
                skip_bad_rows=data_args.skip_bad_rows,
                cache_dir=cache_dir,
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
            phases["test_evaluation"] = time.perf_counter() - testing
        if training_args.make_plots:
            plotting = time.perf_counter()
            from recipes.evaluation.plots import write_run_plots

            first_test = data_args.test_splits[0] if data_args.test_splits else None
            write_run_plots(output_dir, final, processor, dataset, first_test, columns, cache_dir=cache_dir)
            phases["plots"] = time.perf_counter() - plotting
        if "test_evaluation" in phases:  # this run's figures, never an earlier run's left in output_dir
            from model_cards import write_model_card

            logger.info("Model card: %s", write_model_card(output_dir))
        phases["total"] = time.perf_counter() - started
        (output_dir / "run_timings.json").write_text(
            json.dumps({name: round(seconds, 1) for name, seconds in phases.items()}, indent=2) + "\n"
        )
        if push_to_hub:
            url = publish_run(
                output_dir,
                hub_model_id,
                token=training_args.hub_token,
                private=bool(training_args.hub_private_repo),
            )
            logger.info("Published to the Hub: %s", url)
        logger.info(
            "Run finished in %.0f s; model and results in %s", time.perf_counter() - started, output_dir
        )
    # The other ranks wait for the main one's evaluation, then all leave the process group together: a rank that
    # exits while another still runs tears the group down under it (seen: SIGABRT, "terminate called without an
    # active exception", failing the whole launch).
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return results


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
