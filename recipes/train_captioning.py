"""Fine-tune the generator family (`model_type: gated_xattn`: a frozen pretrained causal LM reading an image or a
sound through a perceiver resampler and zero-initialised gated cross-attention) for captioning and open-ended VQA,
with the `transformers.Trainer`, PEFT LoRA on the decoder and `accelerate`.

    accelerate launch --config_file recipes/accelerate_configs/single_process.yaml \\
        recipes/train_captioning.py recipes/configs/gated_xattn_captioning.yaml [--num_train_epochs 3 ...]

`tasks` picks what is trained, in single-task batches interleaved: `image_captioning` (image -> its description),
`audio_captioning` (sound effect -> the description of what makes it; rows without a sound are left out) and `vqa`
(question about an image -> its most common answer, generated). After training the run generates on the test split
of every task and scores it (BLEU-4 / METEOR / ROUGE-L / CIDEr-D; VQA accuracy per answer type), writing
`eval_results.json`, `examples.png` and `loss.png`; `recipes/evaluate_captioning.py` adds the baselines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from transformers import AutoModelForImageTextToText, AutoProcessor, set_seed

if __package__ in (None, ""):  # run as a script (e.g. by accelerate launch): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling.common.towers import FrozenPrefixCache  # noqa: E402
from recipes.data.captioning import (  # noqa: E402
    GENERATION_TASKS,
    GenerationCollator,
    limit_rows,
    load_task_splits,
    task_columns,
)
from recipes.data.matching import MultiTaskDataset  # noqa: E402
from recipes.evaluation.generation import evaluate_generation  # noqa: E402
from recipes.train_retrieval import redact_secrets  # noqa: E402
from recipes.training.arguments import (  # noqa: E402
    CaptioningDataArguments,
    CaptioningTrainingArguments,
    GeneratorModelArguments,
)
from recipes.training.distributed import frozen_prefix_cache_allowed, gather_full_model  # noqa: E402
from recipes.training.generation import GeneratorTrainer  # noqa: E402
from recipes.training.trainer import (  # noqa: E402
    FrozenPrefixCacheCallback,
    JsonlLogCallback,
    configure_run_logging,
    default_cache_dir,
    run_training,
    save_final_model,
)
from recipes.utils.arguments import parse_recipe_arguments  # noqa: E402
from recipes.utils.hardware import choose_precision  # noqa: E402
from recipes.utils.models import unwrap_model  # noqa: E402
from recipes.utils.run_lock import RunLock  # noqa: E402

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_recipe_arguments(
        (GeneratorModelArguments, CaptioningDataArguments, CaptioningTrainingArguments), argv
    )
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    command = ["recipes/train_captioning.py", *redact_secrets(sys.argv[1:] if argv is None else argv)]
    if training_args.process_index != 0:
        return _train(model_args, data_args, training_args, command)
    with RunLock(output_dir, command):
        return _train(model_args, data_args, training_args, command)


def build_generator(args: GeneratorModelArguments):
    """The generator and its processor: a saved folder (or Hub id), or a new one on the named decoder and towers."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    import modeling  # noqa: F401  (registers the families)

    if args.model_name_or_path:
        model = AutoModelForImageTextToText.from_pretrained(args.model_name_or_path, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=True)
        return model, processor
    if args.model_type not in CONFIG_MAPPING:
        raise ValueError(f"model_type={args.model_type!r} is not a registered family.")
    config_class = CONFIG_MAPPING[args.model_type]
    if not hasattr(config_class, "from_pretrained_parts"):
        raise ValueError(f"model_type={args.model_type!r} is not a generator family (try gated_xattn).")
    missing = [name for name in ("text_decoder", "audio_tower", "image_tower") if not getattr(args, name)]
    if missing:
        raise ValueError(
            f"Give `model_name_or_path`, or all of text_decoder, audio_tower, image_tower ({missing})."
        )
    model_class = AutoModelForImageTextToText._model_mapping[config_class]
    config = config_class.from_pretrained_parts(
        text=args.text_decoder, audio=args.audio_tower, image=args.image_tower,
        audio_window_seconds=args.audio_window_seconds, **args.model_config,
    )  # fmt: skip
    model = model_class.from_encoders_pretrained(config)
    processor = PROCESSOR_MAPPING[config_class].from_pretrained_parts(
        args.text_decoder, args.audio_tower, args.image_tower, audio_window_seconds=args.audio_window_seconds
    )
    return model, processor


def check_data_arguments(args: CaptioningDataArguments) -> None:
    unknown = set(args.tasks) - set(GENERATION_TASKS)
    if unknown or not args.tasks:
        raise ValueError(f"tasks must be a non-empty subset of {GENERATION_TASKS}, got {args.tasks}.")
    if "vqa" in args.tasks and not args.vqa_dataset_name:
        raise ValueError("The vqa task needs `vqa_dataset_name` (e.g. outputs/data/stamps_vqa).")
    if {"image_captioning", "audio_captioning"} & set(args.tasks) and not args.dataset_name:
        raise ValueError("Captioning needs `dataset_name` (e.g. outputs/data/stamps).")


def _train(model_args, data_args, training_args, command: list[str]) -> dict:
    output_dir = Path(training_args.output_dir)
    configure_run_logging(training_args, output_dir)
    check_data_arguments(data_args)
    set_seed(training_args.seed)
    started = time.perf_counter()
    cache_dir = Path(training_args.cache_dir) if training_args.cache_dir else default_cache_dir()
    training_args.bf16, precision = choose_precision(training_args.precision, training_args.device.type)
    training_args.mixed_precision = "bf16" if training_args.bf16 else "no"
    logger.info("Training precision: %s", precision)

    splits = load_task_splits(data_args)
    model, processor = build_generator(model_args)
    if model_args.use_lora:
        model = model.apply_lora(
            r=model_args.lora_r, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout
        )
    parameter_table = model.parameter_table()
    logger.info("Parameters:\n%s", parameter_table)

    collators = {
        task: GenerationCollator(processor, task, **task_columns(task, data_args)) for task in data_args.tasks
    }
    train = {
        task: limit_rows(splits[task][data_args.train_split], data_args.max_train_samples)
        for task in collators
    }
    if len(train) > 1:
        from recipes.data.matching import MultiTaskCollator

        train_dataset, train_collator = MultiTaskDataset(train), MultiTaskCollator(collators)
    else:
        ((task, train_dataset),) = train.items()
        train_collator = collators[task]
    eval_task = data_args.tasks[0]  # validation loss of the first task picks the best epoch
    eval_dataset = None
    if data_args.eval_split:
        eval_dataset = limit_rows(splits[eval_task][data_args.eval_split], data_args.max_eval_samples)
    training_args.label_names = ["labels"]
    training_args.prediction_loss_only = True
    if training_args.metric_for_best_model in (None, "loss"):
        training_args.metric_for_best_model, training_args.greater_is_better = "loss", False

    prefix_cache = None
    callbacks = [JsonlLogCallback()]
    if frozen_prefix_cache_allowed(training_args):
        prefix_cache = FrozenPrefixCache(cache_dir / "frozen_prefix")
        unwrap_model(model).enable_frozen_prefix_cache(prefix_cache)
        callbacks.append(FrozenPrefixCacheCallback(prefix_cache))
    trainer = GeneratorTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=train_collator,
        eval_data_collator=collators[eval_task],
        callbacks=callbacks,
    )
    train_result, train_seconds = run_training(trainer, output_dir, prefix_cache)

    results: dict = {"train": train_result.metrics}
    full_model = gather_full_model(
        trainer
    )  # every process: under FSDP the shards are gathered to the main one
    if trainer.is_world_process_zero():
        run_config = {
            "command": command,
            "working_directory": os.getcwd(),
            "model": asdict(model_args),
            "data": asdict(data_args),
            "training": {k: v for k, v in training_args.to_dict().items() if not k.startswith("hub_")},
            "precision_used": precision,
            "split_sizes": {task: {s: len(d) for s, d in splits[task].items()} for task in collators},
            "parameter_table": parameter_table,
            "train_runtime_seconds": train_seconds,
        }
        (output_dir / "run_config.json").write_text(json.dumps(run_config, indent=2, default=str) + "\n")
        final = save_final_model(full_model, processor, output_dir, model_args.save_adapter)
        final.to(training_args.device)
        results["test"] = evaluate_run(
            final, processor, data_args, splits, training_args.per_device_eval_batch_size
        )
        payload = {"model": str(output_dir), "tasks": data_args.tasks, "results": results["test"]}
        (output_dir / "eval_results.json").write_text(json.dumps(payload, indent=2) + "\n")
        from recipes.evaluation.generation import format_generation_results

        for split, by_task in results["test"].items():
            print(f"== {split}")
            print(format_generation_results({task: {"model": metrics} for task, metrics in by_task.items()}))
        if training_args.make_plots:
            from recipes.evaluation.plots import plot_caption_examples, plot_loss

            history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
            plot_loss(history, output_dir / "loss.png", f"{type(final).__name__} loss")
            if "image_captioning" in splits and data_args.test_splits:
                split = data_args.test_splits[0]
                plot_caption_examples(
                    limit_rows(splits["image_captioning"][split], data_args.max_test_samples), results["test"][split]["image_captioning"]["predictions"],
                    output_dir / "examples.png", image_column=data_args.image_column,
                    text_column=data_args.text_column,
                )  # fmt: skip
        from model_cards import CardError, write_model_card

        try:
            logger.info("Model card: %s", write_model_card(output_dir))
        except CardError as error:
            logger.warning("No model card: %s", error)
        logger.info(
            "Run finished in %.0f s; model and results in %s", time.perf_counter() - started, output_dir
        )
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return results


def evaluate_run(model, processor, data_args, splits: dict, batch_size: int) -> dict:
    """Generate on each test split of every task and score it."""
    results: dict = {}
    for split in data_args.test_splits:
        results[split] = {
            task: evaluate_generation(
                model,
                processor,
                limit_rows(splits[task][split], data_args.max_test_samples),
                task,
                task_columns(task, data_args),
                batch_size,
                data_args.max_new_tokens,
                data_args.num_beams,
            )  # fmt: skip
            for task in data_args.tasks
        }
    return results


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
