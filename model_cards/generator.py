"""The model card of a generator run folder (`model_type: gated_xattn`): captioning and VQA figures from
`eval_results.json` in the `model-index`, the baselines of `captioning_results.json` beside them."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = Path(__file__).with_name("template_generator.md")
#: task -> (model-index task type, task name, metrics shown and indexed)
TASKS = {
    "image_captioning": ("image-to-text", "Image captioning", {"bleu_4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider_d": "CIDEr-D"}),
    "audio_captioning": ("audio-text-to-text", "Sound captioning", {"bleu_4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider_d": "CIDEr-D"}),
    "vqa": ("visual-question-answering", "Open-ended VQA", {"accuracy": "VQA accuracy", "accuracy_yes_no": "yes/no", "accuracy_number": "number", "accuracy_other": "other"}),
}  # fmt: skip
PLOTS = {
    "examples.png": "Test images with their reference and the generated caption",
    "loss.png": "Training loss",
}
INTENDED_USE = (
    "Short descriptions of an image or a sound, and short answers to questions about an image, in the style of the "
    "training data (one-line descriptions of cartoon stamps). The decoder is a small instruction-tuned language "
    "model that stays frozen: what it knows of the world is what it brought, and it can describe only as well as "
    "the small image and audio towers let it see.\n\n"
    "Limits: trained on a few hundred images; expect it to name the category rather than the details, to be weak "
    "on photographs, and to answer counting questions near chance (see the results). The decoder without the media "
    "and a nearest-caption retrieval baseline are reported beside it: where they do as well, prefer them."
)


def _metric_entries(results: dict, dataset_id: str, dataset_name: str) -> list[EvalResult]:
    entries = []
    for split, by_task in results.items():
        for task, metrics in by_task.items():
            task_type, task_name, shown = TASKS[task]
            for key, name in shown.items():
                if isinstance(metrics.get(key), int | float):
                    entries.append(EvalResult(
                        task_type=task_type, task_name=task_name, dataset_type=dataset_id, dataset_name=dataset_name,
                        dataset_split=split, metric_type=key, metric_name=name, metric_value=float(metrics[key]),
                    ))  # fmt: skip
    return entries


def results_table(results: dict, baselines: dict | None) -> str:
    """Per split and task, the model (and the baselines of `captioning_results.json` on that split)."""
    lines = []
    for split, by_task in results.items():
        for task, metrics in by_task.items():
            _, task_name, shown = TASKS[task]
            lines += [f"**{task_name}** on `{split}` ({metrics.get('num_rows', '?')} items)", ""]
            lines += ["| model | " + " | ".join(shown.values()) + " |", "|---|" + "---:|" * len(shown)]
            rows = {"**this model**": metrics}
            if baselines and baselines.get("split") == split:
                rows.update({k: v for k, v in baselines["results"].get(task, {}).items() if k != "gated cross-attention generator"})  # fmt: skip
            for name, row in rows.items():
                cells = [f"{row[k]:.3f}" if isinstance(row.get(k), int | float) else "–" for k in shown]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _snippet(model_id: str) -> str:
    return "\n".join([
        "from PIL import Image",
        "from transformers import pipeline",
        "",
        f'captioner = pipeline("image-text-to-text", model="{model_id}", trust_remote_code=True)',
        'image = Image.open("stamp.png")',
        'print(captioner(images=image, text="Describe the image.", return_full_text=False))',
        'print(captioner(images=image, text="What colour is the background?", return_full_text=False))',
    ])  # fmt: skip


def build_generator_card(
    run_dir: str | os.PathLike, model_id: str | None = None, *, dataset_id: str | None = None,
    license: str = "apache-2.0",
) -> ModelCard:  # fmt: skip
    from model_cards.card import CardError, _dataset_facts, _parameter_table, _read_json, tower_base_model

    run_dir = Path(run_dir).resolve()
    config = _read_json(run_dir / "config.json", "this is not a saved model folder")
    evaluation = _read_json(
        run_dir / "eval_results.json", "train the model with recipes/train_captioning.py first"
    )
    results = evaluation.get("results") or {}
    if not results:
        raise CardError(
            f"{run_dir / 'eval_results.json'} holds no results; evaluate the model on a test split."
        )
    results = {split: {t: m for t, m in by_task.items() if t in TASKS} for split, by_task in results.items()}
    run_config = (
        json.loads((run_dir / "run_config.json").read_text())
        if (run_dir / "run_config.json").exists()
        else {}
    )
    baselines_path = run_dir / "captioning_results.json"
    baselines = json.loads(baselines_path.read_text()) if baselines_path.exists() else None
    model_id = model_id or str(run_dir)
    data = run_config.get("data") or {}
    workdir = Path(run_config["working_directory"]) if run_config.get("working_directory") else None
    dataset_name = data.get("dataset_name") or "unknown"
    dataset_id_, dataset_pretty, dataset_license = _dataset_facts(dataset_name, dataset_id, workdir)
    datasets = [dataset_id_]
    if data.get("vqa_dataset_name") and "vqa" in (data.get("tasks") or []):
        datasets.append(_dataset_facts(data["vqa_dataset_name"], None, workdir)[0])
    base_models = [
        base for base in (
            tower_base_model(config.get("text_model_name_or_path"), workdir),
            tower_base_model(config.get("image_model_name_or_path"), workdir),
            tower_base_model(config.get("audio_model_name_or_path"), workdir),
        ) if base
    ]  # fmt: skip
    card_data = ModelCardData(
        model_name=Path(model_id).name if Path(model_id).is_absolute() else model_id,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        license=license,
        tags=[
            "cross-modal-zoo",
            "gated-xattn",
            "flamingo",
            "image-captioning",
            "visual-question-answering",
            "audio-captioning",
            "custom_code",
        ],  # fmt: skip
        base_model=base_models or None,
        datasets=datasets,
        eval_results=_metric_entries(results, dataset_id_, dataset_pretty),
    )
    text, resampler, blocks = (
        config.get(k) or {} for k in ("text_config", "resampler_config", "cross_attention_config")
    )
    layers = [
        i
        for i in range(text.get("num_hidden_layers", 0))
        if (i + 1) % config.get("cross_attention_every", 1) == 0
    ]
    architecture = "\n".join([
        f"- decoder: {text.get('model_type')} ({config.get('text_model_name_or_path')}), {text.get('num_hidden_layers')} "
        f"layers, hidden {text.get('hidden_size')}, frozen (LoRA merged into it when the run used LoRA)",
        f"- perceiver resampler: {config.get('num_latents')} learned latents, {resampler.get('num_hidden_layers')} "
        "layers, reading the image (or audio) tower's tokens",
        f"- gated cross-attention blocks before decoder layers {layers}: `x + tanh(a) xattn(x, latents)`, then "
        f"`x + tanh(b) ffn(x)` ({blocks.get('num_attention_heads')} heads), `a` and `b` initialised at 0",
    ])  # fmt: skip
    training = run_config.get("training") or {}
    model_args = run_config.get("model") or {}
    hyperparameters = [
        ("Epochs", str(training.get("num_train_epochs"))),
        ("Batch", f"{training.get('per_device_train_batch_size')} per device, single-task batches interleaved"),
        ("Optimiser", f"AdamW, learning rate {training.get('learning_rate')}, {training.get('lr_scheduler_type')} schedule"),
        ("Decoder", f"LoRA r={model_args.get('lora_r')}, alpha={model_args.get('lora_alpha')}" if model_args.get("use_lora") else "frozen"),
        ("Precision", str(run_config.get("precision_used"))),
    ]  # fmt: skip
    if run_config.get("train_runtime_seconds") is not None:
        hyperparameters.append(("Training time", f"{run_config['train_runtime_seconds']:.0f} s"))
    sizes = run_config.get("split_sizes") or {}
    splits_line = "; ".join(
        f"{task}: " + ", ".join(f"`{s}` {n}" for s, n in by.items()) for task, by in sizes.items()
    )
    command = run_config.get("command")
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        title=f"Gated cross-attention generator: {card_data.model_name}",
        summary=f"Captions images and sounds and answers questions about images; trained on {dataset_pretty}.",
        decoder_line=f"{text.get('model_type')} ({config.get('text_model_name_or_path')})",
        towers_line=", ".join(
            f"{m}: {(config.get(f'{m}_config') or {}).get('model_type')} ({config.get(f'{m}_model_name_or_path')})"
            for m in ("image", "audio")
        ),  # fmt: skip
        license=license,
        dataset_license=dataset_license,
        architecture_details=architecture,
        parameter_table=_parameter_table(run_config, run_dir),
        snippet=_snippet(model_id),
        intended_use=INTENDED_USE,
        dataset_line=f"{dataset_pretty} (`{dataset_name}`)"
        + (f", licence {dataset_license}" if dataset_license else ""),
        splits_line=splits_line or "not recorded",
        hyperparameters=hyperparameters,
        command=shlex.join(["python", *command]) if isinstance(command, list) else command,
        results_intro=(
            "Greedy generation on held-out splits. Captioning: BLEU-4, METEOR (NLTK), ROUGE-L and CIDEr-D against "
            "the reference description; VQA: the standard VQA accuracy of the generated answer against the ten "
            "annotators' answers. Baseline rows (when evaluated) ran on the same rows."
        ),
        results_table=results_table(results, baselines),
        plots=[(caption, name) for name, caption in PLOTS.items() if (run_dir / name).exists()],
    )
