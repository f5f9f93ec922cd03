"""Fill `template.md` from a run folder of the retrieval recipe.

What the card reads (and nothing else: no number in it is typed by hand):

- `config.json`: the family, towers, embedding size, fusion and loss settings;
- `eval_results.json`: every figure of the results table and of the `model-index` (R@1/5/10 and median rank per
  split and direction, with the chance level of each);
- `run_config.json` (written by `recipes/train_retrieval.py`): the run's data and training arguments, split sizes,
  the parameter table and the command; a folder without it gets a card that says what is not recorded;
- the towers' own model cards (`base_model`) and the dataset's card (`pretty_name`, `license`) when they are local
  folders;
- the plots present in the folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import DatasetCard, EvalResult, ModelCard, ModelCardData

from recipes.evaluation.retrieval import format_results

TEMPLATE = Path(__file__).with_name("template.md")
MODALITIES = ("text", "audio", "image")
#: Figures of each direction that go into the model-index, with their display names.
INDEXED_METRICS = {"R@1": "Recall@1", "R@5": "Recall@5", "R@10": "Recall@10", "median_rank": "Median rank"}
#: Plots a run folder may hold, in the order the card shows them.
PLOTS = {
    "recall_at_k.png": "Recall@K per direction on the first test split",
    "loss.png": "Training and validation loss",
    "loss_diagnostics.png": "Loss diagnostics per step",
    "tsne.png": "t-SNE of the test embeddings, coloured by modality",
    "fusion_attention.png": "Fusion-transformer attention for one test item",
}
MODALITY_NAMES = {"text": "text", "audio": "audio", "image": "image"}


class CardError(ValueError):
    """A run folder that cannot be described (missing or unreadable files)."""


@dataclass(frozen=True)
class FamilyCard:
    title: str
    architecture: str
    pipeline_tag: str
    intended_use: str


FAMILIES = {
    "cman": FamilyCard(
        title="CMAN (Cross-Modal Attention Network)",
        architecture="pretrained towers + a unified fusion transformer",
        pipeline_tag="feature-extraction",
        intended_use=(
            "Retrieval between text, speech or sound, and images, in all six directions, with any subset of the "
            "three modalities as one query (e.g. a spoken description plus a typed one to find an image). The "
            "embeddings also serve zero-shot classification against label prompts and as features for probes.\n\n"
            "Limits: the model ranks what is in its index; it does not caption or answer questions. It was trained "
            "on the data named below only: expect it to be weaker on photographs, long audio, noisy recordings and "
            "languages it did not see. Audio is truncated to the audio tower's window. Where a simpler model of the "
            "same data does as well (the zoo's ablation table compares them), prefer the simpler one."
        ),
    ),
    "late_fusion": FamilyCard(
        title="Late fusion (tri-encoder, CLIP-style)",
        architecture="pretrained towers, one linear projection each, no cross-modal layers",
        pipeline_tag="zero-shot-image-classification",
        intended_use=(
            "Retrieval between text, audio and images with one embedding per modality (a composed query is the "
            "normalised sum of its parts), zero-shot image and audio classification with the stock transformers "
            "pipelines, and a strong simple baseline for the fusion families.\n\n"
            "Limits: no modality sees another before the similarity, so queries that need the parts to interact are "
            "out of reach; trained only on the data named below."
        ),
    ),
}


def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise CardError(f"{path} is missing: {what}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CardError(f"{path} is not valid JSON ({error}); re-run the step that writes it.") from error


def _yaml_header(readme: Path) -> dict:
    if not readme.is_file():
        return {}
    try:
        return DatasetCard.load(readme).data.to_dict()
    except Exception:  # a tower or dataset folder with a README that is not a card: nothing to read from it
        return {}


def _looks_like_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name)) and not name.startswith(".")


def tower_base_model(name_or_path: str | None, base: Path | None = None) -> str | None:
    """The Hub model a tower comes from: a Hub id as given, or the `base_model` its local folder's card names (a
    relative path is looked up from `base`, the run's working directory, else from here)."""
    if not name_or_path:
        return None
    path = Path(name_or_path)
    if base is not None and not path.is_absolute():
        path = base / path
    if path.is_dir():
        base = _yaml_header(path / "README.md").get("base_model")
        return base[0] if isinstance(base, list) and base else base
    # Not a folder: a Hub id (`name` or `owner/name`), unless it was a local path (relative, or with more parts).
    local = (
        Path(name_or_path).is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    )
    return name_or_path if _looks_like_hub_id(name_or_path) and not local else None


def _dataset_facts(
    dataset_name: str, dataset_id: str | None, base: Path | None = None
) -> tuple[str, str, str | None]:
    """(id for the metadata, readable name, licence) of the training data."""
    path = Path(dataset_name)
    if base is not None and not path.is_absolute():
        path = base / path
    if path.is_dir():
        header = _yaml_header(path / "README.md")
        pretty = header.get("pretty_name") or path.name
        return dataset_id or path.name, pretty, header.get("license")
    return dataset_id or dataset_name, dataset_name, None


def _direction_title(direction: str) -> tuple[str, str, str]:
    """`text+audio_to_image` -> (task type, task name, display)."""
    query, gallery = direction.split("_to_")
    parts = query.split("+")
    task_type = f"{'-and-'.join(parts)}-to-{gallery}-retrieval"
    display = f"{' + '.join(parts)} → {gallery}"
    return task_type, f"{display[0].upper()}{display[1:]} retrieval", display


def eval_results_of(results: dict, dataset_id: str, dataset_name: str) -> list[EvalResult]:
    """One `EvalResult` per split, direction (and composed query) and indexed metric of `eval_results.json`."""
    entries = []
    for split, split_results in results.items():
        rows = {**split_results.get("directions", {}), **split_results.get("composed", {})}
        for direction, metrics in rows.items():
            task_type, task_name, _ = _direction_title(direction)
            for key, metric_name in INDEXED_METRICS.items():
                if key not in metrics:
                    continue
                entries.append(
                    EvalResult(
                        task_type=task_type,
                        task_name=task_name,
                        dataset_type=dataset_id,
                        dataset_name=dataset_name,
                        dataset_split=split,
                        metric_type=key.lower().replace("@", "_at_"),
                        metric_name=metric_name,
                        metric_value=metrics[key],
                    )
                )
    return entries


def baseline_table(ablation: dict, results: dict, split: str = "test") -> str | None:
    """R@1 and R@10 per direction of this model beside each row of an ablation (`benchmarks/ablation.py`'s
    `ablation.json`), all on `split`."""
    if split not in results or not ablation:
        return None
    directions = list(results[split].get("directions", {}))
    header = "| model | " + " | ".join(_direction_title(d)[2] for d in directions) + " |"
    lines = [header, "|---|" + "---:|" * len(directions)]

    def row(name: str, metrics: dict) -> str:
        cells = [
            f"{metrics[d]['R@1']:.3f} / {metrics[d]['R@10']:.3f}" if d in metrics else "–" for d in directions
        ]
        return f"| {name} | " + " | ".join(cells) + " |"

    lines.append(row("**this model**", results[split]["directions"]))
    for name, record in ablation.items():
        lines.append(row(name, record.get("metrics", {})))
    chance = results[split]["directions"]
    lines.append(
        "| chance | "
        + " | ".join(
            f"{chance[d]['chance']['R@1']:.3f} / {chance[d]['chance']['R@10']:.3f}" for d in directions
        )
        + " |"
    )
    return "\n".join(lines) + f"\n\nR@1 / R@10 on `{split}`, same data and split for every row."


def _towers(config: dict) -> dict[str, str]:
    towers = {}
    for modality in MODALITIES:
        sub = config.get(f"{modality}_config") or {}
        name = config.get(f"{modality}_model_name_or_path") or sub.get("_name_or_path")
        kind = sub.get("model_type", "?")
        if sub:
            towers[modality] = f"{kind} ({name})" if name else kind
    return towers


def _architecture_details(config: dict) -> str:
    model_type = config.get("model_type")
    lines = []
    for modality, tower in _towers(config).items():
        lines.append(f"- {modality} tower: {tower}")
    if model_type == "cman":
        fusion = config.get("fusion_encoder_config") or {}
        lines.append(
            f"- fusion transformer: {fusion.get('num_hidden_layers')} layers, hidden {fusion.get('hidden_size')}, "
            f"{fusion.get('num_attention_heads')} heads, feed-forward {fusion.get('intermediate_size')}, "
            f"pooling {fusion.get('pooling', 'mean')}; every modality's tokens are projected into it with a "
            "modality-type embedding, and its pooled output is projected into the shared space"
        )
        if config.get("late_fusion_residual"):
            lines.append(
                "- late-fusion residual: each modality's projected tower mean, L2-normalised and summed, is added "
                "to the fusion output (whose projection starts at zero, so the untrained model *is* late fusion)"
            )
    else:
        lines.append("- one linear projection per modality of the tower's mean-pooled tokens")
    if config.get("speech_recognizer_config") and (config.get("transcribe_audio", True)):
        lines.append(
            "- a frozen Whisper speech recogniser transcribes each clip inside the model; the transcript's text-"
            "tower tokens join the audio's (no transcript is needed from the user)"
        )
    loss = config.get("loss_type", "infonce")
    loss_line = {
        "infonce": f"InfoNCE (temperature {config.get('temperature', 'learned')})",
        "sigmoid": "sigmoid (SigLIP)",
        "max_margin": f"bidirectional max-margin, margin {config.get('margin')}, "
        f"{config.get('max_margin_negatives', 'hardest')} negatives",
    }.get(loss, loss)
    lines.append(f"- loss: {loss_line}, in both directions of every pair of modalities")
    return "\n".join(lines)


def _parameter_table(run_config: dict, run_dir: Path) -> str:
    if run_config.get("parameter_table"):
        return (
            "Parameters (as trained; *trainable* counts what this run updated):\n\n"
            + run_config["parameter_table"]
        )
    from safetensors import safe_open

    weights = run_dir / "model.safetensors"
    if not weights.exists():
        return "The parameter table is not recorded (no `run_config.json`, no `model.safetensors`)."
    counts: dict[str, int] = {}
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118  (safe_open has no __iter__)
            shape = handle.get_slice(key).get_shape()
            size = 1
            for dim in shape:
                size *= dim
            counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + size
    lines = ["| component | parameters |", "|---|---:|"]
    lines += [f"| {name} | {count:,} |" for name, count in counts.items()]
    lines.append(f"| **total** | **{sum(counts.values()):,}** |")
    return "Parameters per component of the saved weights:\n\n" + "\n".join(lines)


def _hyperparameters(run_config: dict, config: dict) -> list[tuple[str, str]]:
    training = run_config.get("training") or {}
    model = run_config.get("model") or {}
    if not training:
        return [("Hyper-parameters", "not recorded (the run folder has no `run_config.json`)")]
    world = training.get("world_size", 1)
    batch = training.get("per_device_train_batch_size")
    accumulation = training.get("gradient_accumulation_steps", 1)
    rows = [
        ("Epochs", f"{training.get('num_train_epochs')}" + (f" (max_steps {training['max_steps']})" if training.get("max_steps", -1) > 0 else "")),
        ("Batch", f"{batch} per device × {world} process(es) × {accumulation} accumulation = {batch * world * accumulation}"),
        ("Optimiser", f"AdamW, learning rate {training.get('learning_rate')}, weight decay {training.get('weight_decay')}, "
         f"{training.get('lr_scheduler_type')} schedule, {training.get('warmup_steps')} warm-up steps"),
        ("Precision", str(training.get("precision_used", training.get("precision")))),
        ("Towers", "LoRA r={lora_r}, alpha={lora_alpha}, dropout={lora_dropout} on {lora_towers}".format(**model)
         if model.get("use_lora") else "frozen (no LoRA)"),
        ("Loss", f"{config.get('loss_type')}" + (f", the first {training['loss_warmup_steps']} steps with {training.get('loss_warmup')}"
                                                if training.get("loss_warmup_steps") else "")),
        ("Seed", str(training.get("seed"))),
    ]  # fmt: skip
    if run_config.get("train_runtime_seconds") is not None:
        rows.append(
            (
                "Training time",
                f"{run_config['train_runtime_seconds']:.0f} s on {run_config.get('device', '?')}",
            )
        )
    return rows


def _snippet(model_id: str, config: dict) -> str:
    audio = bool(config.get("audio_config"))
    image = bool(config.get("image_config"))
    lines = [
        "import numpy as np",
        "import torch",
        "from PIL import Image",
        "from transformers import AutoModel, AutoProcessor",
        "",
        f'model_id = "{model_id}"',
        "model = AutoModel.from_pretrained(model_id, trust_remote_code=True).eval()",
        "processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)",
        "",
        'texts = ["a red fire engine", "a cat sleeping on a cushion"]',
    ]
    if image:
        lines.append('images = [Image.new("RGB", (256, 256), "red"), Image.new("RGB", (256, 256), "white")]')
    if audio:
        lines.append("speech = [np.zeros(16000, dtype=np.float32)]  # 1 s at 16 kHz: use a real recording")
    lines += ["", "with torch.no_grad():"]
    lines.append(
        '    text = model.get_text_features(**processor(text=texts, return_tensors="pt")).pooler_output'
    )
    if image:
        lines.append(
            '    image = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output'
        )
    if audio:
        lines.append(
            '    audio = model.get_audio_features(**processor(audio=speech, sampling_rate=16000, return_tensors="pt")).pooler_output'
        )
        if image:
            lines += [
                "    # Any subset of modalities is one query: text and speech together, against the images.",
                '    inputs = processor(text=texts[:1], audio=speech, sampling_rate=16000, return_tensors="pt")',
                '    composed = model.encode([("text", "audio")], **inputs)[("text", "audio")]',
            ]
    if image:
        lines.append("print((text @ image.T).softmax(dim=-1))  # which image each text describes")
    if audio and image:
        lines.append(
            "print((composed @ image.T).tolist())  # cosine similarity of the composed query to each image"
        )
    return "\n".join(lines)


def build_model_card(
    run_dir: str | os.PathLike,
    model_id: str | None = None,
    *,
    baselines: str | os.PathLike | None = None,
    dataset_id: str | None = None,
    license: str = "apache-2.0",
) -> ModelCard:
    """The model card of a run folder. `model_id` is the Hub id the snippet loads (default: the folder itself);
    `baselines` an `ablation.json` whose rows are shown beside this model's test figures."""
    run_dir = Path(run_dir).resolve()
    config = _read_json(run_dir / "config.json", "this is not a saved model folder")
    evaluation = _read_json(
        run_dir / "eval_results.json",
        "evaluate the model first (recipes/evaluate_retrieval.py --output_dir RUN_DIR)",
    )
    results = evaluation.get("results") or {}
    if not results:
        raise CardError(
            f"{run_dir / 'eval_results.json'} holds no results; evaluate the model on a test split."
        )
    run_config = (
        json.loads((run_dir / "run_config.json").read_text())
        if (run_dir / "run_config.json").exists()
        else {}
    )
    model_type = config.get("model_type", "?")
    if model_type == "gated_xattn":
        from model_cards.generator import build_generator_card

        return build_generator_card(run_dir, model_id, dataset_id=dataset_id, license=license)
    family = FAMILIES.get(model_type)
    if family is None:
        raise CardError(f"No card layout for model_type {model_type!r}; the zoo has {sorted(FAMILIES)}.")
    model_id = model_id or str(run_dir)
    dataset_name = (
        (run_config.get("data") or {}).get("dataset_name") or evaluation.get("dataset") or "unknown"
    )
    workdir = Path(run_config["working_directory"]) if run_config.get("working_directory") else None
    dataset_id_, dataset_pretty, dataset_license = _dataset_facts(dataset_name, dataset_id, workdir)

    base_models = []
    for modality in MODALITIES:
        sub = config.get(f"{modality}_config") or {}
        base = tower_base_model(
            config.get(f"{modality}_model_name_or_path") or sub.get("_name_or_path"), workdir
        )
        if base and base not in base_models:
            base_models.append(base)
    tags = ["cross-modal-zoo", model_type.replace("_", "-"), "retrieval", "multimodal", "custom_code"]
    tags += [m for m in MODALITIES if config.get(f"{m}_config")]
    card_data = ModelCardData(
        model_name=Path(model_id).name if Path(model_id).is_absolute() else model_id,
        library_name="transformers",
        pipeline_tag=family.pipeline_tag,
        license=license,
        tags=tags,
        base_model=base_models or None,
        datasets=[dataset_id_],
        eval_results=eval_results_of(results, dataset_id_, dataset_pretty),
    )
    splits = run_config.get("split_sizes") or {}
    splits_line = ", ".join(f"`{name}` {size}" for name, size in splits.items()) or "not recorded"
    splits_line += "; tested on " + ", ".join(
        f"`{s}` ({r.get('num_items', '?')} items)" for s, r in results.items()
    )
    ablation = json.loads(Path(baselines).read_text()) if baselines else None
    plots = [(caption, name) for name, caption in PLOTS.items() if (run_dir / name).exists()]
    command = run_config.get("command")
    towers_line = ", ".join(f"{m}: {t}" for m, t in _towers(config).items())
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        title=f"{family.title}: {card_data.model_name}",
        summary=(
            f"A {family.title} retrieval model: text, audio and images in one {config.get('projection_dim')}-d "
            f"space, trained on {dataset_pretty}."
        ),
        model_type=model_type,
        architecture=family.architecture,
        projection_dim=config.get("projection_dim"),
        towers_line=towers_line,
        license=license,
        dataset_license=dataset_license,
        architecture_details=_architecture_details(config),
        parameter_table=_parameter_table(run_config, run_dir),
        snippet=_snippet(model_id, config),
        usage_notes=(
            "`get_text_features`, `get_audio_features` and `get_image_features` return L2-normalised embeddings "
            "as `pooler_output`; `encode` embeds any combination of modalities as one query. Audio is mono at any "
            "sampling rate (the processor resamples); clips longer than the processor's `max_audio_seconds` are "
            "refused."
        ),
        intended_use=family.intended_use,
        dataset_line=f"{dataset_pretty} (`{dataset_name}`)"
        + (f", licence {dataset_license}" if dataset_license else ""),
        splits_line=splits_line,
        hyperparameters=_hyperparameters(run_config, config),
        command=shlex.join(["python", *command]) if isinstance(command, list) else command,
        results_intro=(
            "Recall@K (share of queries whose match is among the first K results) and median rank of the match, "
            "on held-out splits; in brackets the same figure for a random ranking. Captions that normalise to the "
            "same string count as one item."
        ),
        # The evaluation's own table (its note on the brackets is the intro above).
        results_table=format_results(results).split("\n\nIn brackets")[0],
        baseline_table=baseline_table(ablation, results) if ablation else None,
        plots=plots,
    )
    return card


def write_model_card(run_dir: str | os.PathLike, model_id: str | None = None, **kwargs) -> Path:
    """Write `README.md` (the model card) into `run_dir` and return its path; see [`build_model_card`]."""
    card = build_model_card(run_dir, model_id, **kwargs)
    path = Path(run_dir) / "README.md"
    card.save(path)
    return path
