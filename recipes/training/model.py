"""Build a model and its processor from a recipe's arguments, for any registered family.

A retrieval family registers its config, model and processor with the Auto classes (`import modeling`) and offers:
`Config.from_towers(text=, audio=, image=, audio_window_seconds=, **fields)`, `Model.from_encoders_pretrained(config)`,
`Processor.from_towers(text, audio, image, audio_window_seconds=)`, and on the model the retrieval interface
(`get_*_features`, `encode`, `retrieval_loss`, `inverse_temperature`) plus `apply_lora`, `lora_target_modules`,
`tower_attributes` and `parameter_table`. The recipe picks the family by `model_type` in the YAML.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoProcessor, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

import modeling  # noqa: F401  (registers the families with the Auto classes)

from .arguments import ModelArguments


def family_classes(model_type: str, auto_class=AutoModel) -> tuple[type, type, type]:
    """`(config class, model class, processor class)` of a registered family; the model class is the one
    `auto_class` maps the family to (`AutoModel`: the bare model; e.g. `AutoModelForVisualQuestionAnswering`)."""
    if model_type not in CONFIG_MAPPING:
        families = sorted(
            name for name in CONFIG_MAPPING if CONFIG_MAPPING[name].__module__.startswith("modeling.")
        )
        raise ValueError(f"model_type={model_type!r} is not a family of this zoo; choose one of {families}.")
    config_class = CONFIG_MAPPING[model_type]
    mapping = MODEL_MAPPING if auto_class is AutoModel else auto_class._model_mapping
    if config_class not in mapping:
        raise ValueError(f"model_type={model_type!r} has no model for {auto_class.__name__}.")
    model_class, processor_class = mapping[config_class], PROCESSOR_MAPPING[config_class]
    if not hasattr(config_class, "from_towers") or not hasattr(model_class, "from_encoders_pretrained"):
        raise ValueError(f"model_type={model_type!r} cannot be built from towers.")
    return config_class, model_class, processor_class


def tower_argument(path: str | None, overrides: dict, load_weights: bool):
    """A tower for `from_towers`: its name (weights loaded) or a config (random weights, with `overrides`)."""
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


def build_model_and_processor(args: ModelArguments, auto_class=AutoModel, config_fields: dict | None = None):
    """The model to train and its processor: a saved folder or Hub id (loaded by `auto_class`; `config_fields`
    override its config, e.g. a new answer vocabulary), or a new model of `args.model_type` built from the three
    towers, whose config takes `args.model_config` and `config_fields`."""
    config_fields = config_fields or {}
    if args.model_name_or_path:
        model = auto_class.from_pretrained(args.model_name_or_path, trust_remote_code=True, **config_fields)
        processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=True)
        return model, processor
    config_class, model_class, processor_class = family_classes(args.model_type, auto_class)
    towers = {"text": args.text_tower, "audio": args.audio_tower, "image": args.image_tower}
    if None in towers.values():
        raise ValueError(
            "Give `model_name_or_path`, or all of `text_tower`, `audio_tower` and `image_tower`."
        )
    unknown = set(args.tower_config_overrides) - set(towers)
    if unknown:
        raise ValueError(
            f"tower_config_overrides keys must be among {sorted(towers)}, got {sorted(unknown)}."
        )
    config = config_class.from_towers(
        **{
            modality: tower_argument(
                path, args.tower_config_overrides.get(modality, {}), args.load_tower_weights
            )
            for modality, path in towers.items()
        },
        audio_window_seconds=args.audio_window_seconds,
        **{**args.model_config, **config_fields},
    )
    model = model_class.from_encoders_pretrained(config) if args.load_tower_weights else model_class(config)
    processor = processor_class.from_towers(
        towers["text"], towers["audio"], towers["image"], audio_window_seconds=args.audio_window_seconds
    )
    return model, processor


def lora_targets(
    model: PreTrainedModel,
    towers: list[str],
    last_n: int | None = None,
    last_n_per_tower: dict[str, int | None] | None = None,
) -> list[str]:
    """LoRA target modules of the chosen towers, optionally only the last `last_n` of each (in depth order);
    `last_n_per_tower` overrides `last_n` for the towers it names (None: every target of that tower)."""
    last_n_per_tower = last_n_per_tower or {}
    attributes = model.tower_attributes
    for name, value in (("lora_towers", towers), ("lora_last_n_per_tower", list(last_n_per_tower))):
        unknown = set(value) - set(attributes)
        if unknown:
            raise ValueError(f"{name} must be among {sorted(attributes)}, got {sorted(unknown)}.")
    all_targets = model.lora_target_modules()
    targets = []
    for tower in towers:
        names = [n for n in all_targets if n.startswith(f"{attributes[tower]}.")]
        n = last_n_per_tower.get(tower, last_n)
        targets += names[-n:] if n else names
    return targets
