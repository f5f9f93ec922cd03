"""Fine-tune a matching family (`model_type: early_fusion` or `cross_attention`) for visual question answering,
image-text matching, or both at once, with the `transformers.Trainer`, PEFT LoRA and `accelerate`.

    accelerate launch --config_file recipes/accelerate_configs/single_process.yaml \\
        recipes/train_vqa.py recipes/configs/early_fusion_vqa.yaml [--num_train_epochs 3 ...]

`tasks` in the YAML picks the head: `[vqa]` trains `...ForQuestionAnswering` on the VQA dataset (`dataset_name`; the
answer vocabulary is read from its `train` split), `[matching]` trains `...ForImageTextMatching` on matched pairs
(`pairs_dataset_name`) with the pair objectives the config weights (`itc_weight`, `itm_weight`, `mlm_weight`,
`mpm_weight`), and `[vqa, matching]` a multi-task answering model whose batches interleave both. `question_only:
true` blanks every image: the question-only baseline of the same model. After training the run evaluates on the
test splits (VQA accuracy per answer type with chance; matching accuracy; with `rerank_with`, the re-ranking of a
retriever's top-k) and writes `eval_results.json`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import datasets
from transformers import (
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    EarlyStoppingCallback,
    set_seed,
)

if __package__ in (None, ""):  # run as a script (e.g. by accelerate launch): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling.common.towers import FrozenPrefixCache  # noqa: E402
from recipes.data.matching import (  # noqa: E402
    TASKS,
    MultiTaskCollator,
    MultiTaskDataset,
    PairCollator,
    VqaCollator,
)
from recipes.data.retrieval import RetrievalColumns, load_retrieval_dataset, prepare_for_lazy_decoding  # noqa: E402
from recipes.data.vqa import answer_vocabulary  # noqa: E402
from recipes.train_retrieval import redact_secrets  # noqa: E402
from recipes.training.arguments import MatchingDataArguments, ModelArguments, RecipeTrainingArguments  # noqa: E402
from recipes.training.distributed import frozen_prefix_cache_allowed, gather_full_model  # noqa: E402
from recipes.training.matching import MatchingTrainer, vqa_score_metrics  # noqa: E402
from recipes.training.model import build_model_and_processor, lora_targets  # noqa: E402
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
        (ModelArguments, MatchingDataArguments, RecipeTrainingArguments), argv
    )
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    command = ["recipes/train_vqa.py", *redact_secrets(sys.argv[1:] if argv is None else argv)]
    if training_args.process_index != 0:  # the main process holds the folder for all of them
        return _train(model_args, data_args, training_args, command)
    with RunLock(output_dir, command):
        return _train(model_args, data_args, training_args, command)


def check_data_arguments(args: MatchingDataArguments) -> None:
    unknown = set(args.tasks) - set(TASKS)
    if unknown or not args.tasks:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {args.tasks}.")
    if "vqa" in args.tasks and not args.dataset_name:
        raise ValueError("The vqa task needs `dataset_name` (a VQA dataset, e.g. outputs/data/stamps_vqa).")
    if "matching" in args.tasks and not args.pairs_dataset_name:
        raise ValueError(
            "The matching task needs `pairs_dataset_name` (matched pairs, e.g. outputs/data/stamps)."
        )
    if args.pairs_other_modality not in ("image", "audio"):
        raise ValueError(
            f"pairs_other_modality must be 'image' or 'audio', got {args.pairs_other_modality!r}."
        )
    if args.rerank_with and args.pairs_other_modality != "image":
        raise ValueError("rerank_with re-ranks text<->image retrieval: it needs image pairs.")


def load_splits(name: str, args: MatchingDataArguments, columns: list[str]) -> dict:
    """The train / eval / test splits of a dataset, with only `columns`, images left undecoded (the collators decode
    them, naming a bad row)."""
    dataset = load_retrieval_dataset(name)
    wanted = [s for s in (args.train_split, args.eval_split, *args.test_splits) if s]
    missing = [s for s in wanted if s not in dataset]
    if missing:
        raise ValueError(f"{name} has no split(s) {missing}; it has {sorted(dataset)}.")
    absent = [c for c in columns if c not in dataset[args.train_split].column_names]
    if absent:
        raise ValueError(
            f"{name} has no column(s) {absent}; its columns: {dataset[args.train_split].column_names}."
        )
    image_columns = RetrievalColumns(
        text=None, audio=None, image="image" if "image" in columns else None, id=None
    )
    return {s: prepare_for_lazy_decoding(dataset[s].select_columns(columns), image_columns) for s in wanted}


def _limit(dataset, count: int | None):
    return dataset.select(range(min(count, len(dataset)))) if count else dataset


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

    vqa = pairs = None
    if "vqa" in data_args.tasks:
        vqa_columns = [
            data_args.question_column,
            data_args.answers_column,
            data_args.image_column,
            "answer_type",
        ]
        vqa = load_splits(data_args.dataset_name, data_args, vqa_columns)
    if "matching" in data_args.tasks:
        pairs = load_splits(
            data_args.pairs_dataset_name,
            data_args,
            [data_args.pairs_text_column, data_args.pairs_other_column],
        )

    # The answering head when VQA is trained (multi-task with matching), else the matching head.
    config_fields: dict = {}
    if vqa is not None:
        vocabulary = answer_vocabulary(
            vqa[data_args.train_split], data_args.answer_min_count, column=data_args.answers_column
        )
        config_fields = {
            "id2label": dict(enumerate(vocabulary)),
            "label2id": {answer: i for i, answer in enumerate(vocabulary)},
            "multitask": pairs is not None,
        }
        auto_class = AutoModelForVisualQuestionAnswering
        logger.info("Answer vocabulary: %d answers from %s", len(vocabulary), data_args.train_split)
    else:
        auto_class = AutoModelForPreTraining
    model, processor = build_model_and_processor(model_args, auto_class, config_fields)
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
    config = unwrap_model(model).config

    collators = {}
    if vqa is not None:
        collators["vqa"] = VqaCollator(
            processor, config.label2id, data_args.question_column, data_args.answers_column, data_args.image_column,
            question_only=data_args.question_only,
        )  # fmt: skip
    if pairs is not None:
        collators["matching"] = PairCollator(
            processor, data_args.pairs_text_column, data_args.pairs_other_column, data_args.pairs_other_modality,
            mlm_probability=config.mlm_probability, seed=training_args.seed,
        )  # fmt: skip
    sources = {"vqa": vqa, "matching": pairs}
    train = {
        task: _limit(sources[task][data_args.train_split], data_args.max_train_samples) for task in collators
    }
    if len(train) > 1:
        train_dataset, train_collator = MultiTaskDataset(train), MultiTaskCollator(collators)
    else:
        ((task, train_dataset),) = train.items()
        train_collator = collators[task]
    # Validation: the answers when VQA is trained (the soft score of the top answer picks the best epoch), else the
    # pair objectives' loss.
    eval_task = "vqa" if vqa is not None else "matching"
    eval_dataset = None
    if data_args.eval_split:
        eval_dataset = _limit(sources[eval_task][data_args.eval_split], data_args.max_eval_samples)
    training_args.label_names = ["labels"] if eval_task == "vqa" else []
    if eval_task == "matching" and training_args.metric_for_best_model in (None, "loss"):
        training_args.metric_for_best_model, training_args.greater_is_better = "loss", False

    prefix_cache = None
    callbacks = [JsonlLogCallback()]
    if frozen_prefix_cache_allowed(training_args):
        prefix_cache = FrozenPrefixCache(cache_dir / "frozen_prefix")
        unwrap_model(model).enable_frozen_prefix_cache(prefix_cache)
        callbacks.append(FrozenPrefixCacheCallback(prefix_cache))
    if training_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
    trainer = MatchingTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=train_collator,
        eval_data_collator=collators[eval_task],
        compute_metrics=vqa_score_metrics if eval_task == "vqa" and eval_dataset is not None else None,
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
            "split_sizes": {task: {s: len(d) for s, d in sources[task].items()} for task in collators},
            "parameter_table": parameter_table,
            "train_runtime_seconds": train_seconds,
        }
        (output_dir / "run_config.json").write_text(json.dumps(run_config, indent=2, default=str) + "\n")
        final = save_final_model(full_model, processor, output_dir, model_args.save_adapter)
        final.to(training_args.device)
        results["test"] = evaluate_run(
            final, processor, data_args, vqa, pairs, training_args.per_device_eval_batch_size
        )
        payload = {"model": str(output_dir), "tasks": data_args.tasks, "results": results["test"]}
        (output_dir / "eval_results.json").write_text(json.dumps(payload, indent=2) + "\n")
        from recipes.evaluation.matching import format_matching_results

        print(format_matching_results(results["test"]))
        if training_args.make_plots and vqa is not None and data_args.test_splits:
            from recipes.evaluation.plots import plot_loss, plot_matching_attention

            test = vqa[data_args.test_splits[0]].cast_column(data_args.image_column, datasets.Image())
            picks = [i for i in range(0, len(test), max(1, len(test) // 4))][:4]
            examples = [
                {"image": test[i][data_args.image_column], "question": test[i][data_args.question_column],
                 "answer": test[i]["multiple_choice_answer"] if "multiple_choice_answer" in test.column_names
                 else test[i][data_args.answers_column][0]}
                for i in picks
            ]  # fmt: skip
            plot_matching_attention(final, processor, examples, output_dir / "attention.png")
            history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
            plot_loss(history, output_dir / "loss.png", f"{type(final).__name__} loss")
        logger.info(
            "Run finished in %.0f s; model and results in %s", time.perf_counter() - started, output_dir
        )
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return results


def evaluate_run(model, processor, data_args, vqa, pairs, batch_size: int) -> dict:
    """The test figures of a finished run: VQA accuracy per answer type with chance (and the baseline's own
    question-only setting), matching accuracy, and re-ranking when asked."""
    from recipes.evaluation.matching import (
        chance_accuracy,
        evaluate_matching,
        evaluate_vqa,
        rerank_retrieval,
        training_answers_by_type,
    )

    results: dict = {}
    for split in data_args.test_splits:
        split_results: dict = {}
        if vqa is not None:
            split_results["vqa"] = evaluate_vqa(
                model, processor, vqa[split], batch_size, question_only=data_args.question_only
            )
            split_results["vqa"]["chance"] = chance_accuracy(
                vqa[split], training_answers_by_type(vqa[data_args.train_split])
            )
        if pairs is not None and model.itm_head is not None:
            if data_args.pairs_other_modality == "image":
                split_results["matching"] = evaluate_matching(
                    model, processor, pairs[split], batch_size, text_column=data_args.pairs_text_column,
                    image_column=data_args.pairs_other_column,
                )  # fmt: skip
            if data_args.rerank_with:
                from recipes.evaluation.retrieval import load_model_and_processor

                retriever, retriever_processor = load_model_and_processor(
                    data_args.rerank_with, str(model.device)
                )
                split_results["rerank"] = rerank_retrieval(
                    retriever, retriever_processor, model, processor, pairs[split], data_args.rerank_top_k,
                    batch_size, data_args.pairs_text_column, data_args.pairs_other_column,
                )  # fmt: skip
                split_results["rerank"]["retriever"] = data_args.rerank_with
        results[split] = split_results
    return results


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
