# Copied from modeling.common.towers: edit modeling/common/towers.py, then run `make fix-copies`.
"""Pretrained encoders ("towers") of the cross-modal families: which checkpoints can serve as the text, audio and
image tower, how to build and load them strictly, which modules LoRA adapts, and how each turns its input into a
sequence of tokens."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput, logging

logger = logging.get_logger(__name__)

MODALITIES = ("text", "audio", "image")
#: Tower families each modality accepts (transformers `model_type`s).
TOWER_MODEL_TYPES = {
    "text": ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "deberta-v2"),
    "audio": ("audio-spectrogram-transformer", "whisper"),
    "image": ("vit", "deit", "timm_wrapper"),
}
#: Modules LoRA adapts in each tower family: attention query/value projections (pointwise convolutions for timm
#: convnets; depthwise convolutions cannot take LoRA).
LORA_TARGETS = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "camembert": ("query", "value"),
    "electra": ("query", "value"),
    "deberta-v2": ("query_proj", "value_proj"),
    "distilbert": ("q_lin", "v_lin"),
    "audio-spectrogram-transformer": ("query", "value", "q_proj", "v_proj"),
    "whisper": ("q_proj", "v_proj"),
    "vit": ("query", "value", "q_proj", "v_proj"),
    "deit": ("query", "value", "q_proj", "v_proj"),
    "timm_wrapper": ("conv_pw", "conv_pwl", "conv_head"),
}
#: Weights of a pretrained checkpoint the towers never use (pooling and classification heads).
UNUSED_HEADS = ("pooler.", "classifier.", "head.", "timm_model.classifier")
# Whisper's encoder emits one token per 20 ms (two mel frames of 10 ms, then a stride-2 convolution).
WHISPER_TOKENS_PER_SECOND = 50


def check_tower_config(config: PreTrainedConfig, modality: str, owner: str) -> None:
    """Raise an error naming `<owner>.<modality>_config` when `config` is not a tower family `modality` accepts."""
    allowed = TOWER_MODEL_TYPES[modality]
    if config.model_type not in allowed:
        raise ValueError(
            f"{owner}.{modality}_config has model_type {config.model_type!r}, which cannot serve as the {modality} "
            f"tower; use one of {allowed}."
        )


def tower_config_from_pretrained(name_or_path: str | os.PathLike, modality: str) -> PreTrainedConfig:
    """The config of a pretrained tower (Hub id or folder). Of a full Whisper checkpoint only the encoder is used."""
    config = AutoConfig.from_pretrained(name_or_path)
    if modality == "audio" and config.model_type == "whisper":
        config.is_encoder_decoder = False
    return config


def shorten_whisper_window(audio_config: PreTrainedConfig, window_seconds: float) -> None:
    """Run a Whisper encoder on a `window_seconds` window (e.g. 5.0 -> 250 positions); its positional table is
    sliced when pretrained weights are loaded."""
    if audio_config is None or audio_config.model_type != "whisper":
        raise ValueError("`audio_window_seconds` applies to a Whisper audio tower; pass `audio=` a Whisper.")
    positions = round(window_seconds * WHISPER_TOKENS_PER_SECOND)
    if not 1 <= positions <= audio_config.max_source_positions:
        raise ValueError(
            f"audio_window_seconds={window_seconds} gives {positions} encoder positions; it must be between 0.02 s "
            f"and {audio_config.max_source_positions / WHISPER_TOKENS_PER_SECOND} s."
        )
    audio_config.max_source_positions = positions


def audio_window_seconds(audio_config: PreTrainedConfig) -> float:
    """Seconds of audio the audio tower sees (the Whisper window, or AST `max_length` frames of 10 ms)."""
    if audio_config.model_type == "whisper":
        return audio_config.max_source_positions / WHISPER_TOKENS_PER_SECOND
    return audio_config.max_length / 100.0


def build_tower(config: PreTrainedConfig) -> PreTrainedModel:
    """Instantiate a tower (random weights) from its config; only the parts the families read are built."""
    if config.model_type == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder(config)
    kwargs = {}
    if config.model_type in ("bert", "roberta", "xlm-roberta", "camembert", "vit", "deit"):
        kwargs["add_pooling_layer"] = False
    return AutoModel.from_config(config, **kwargs)


def tower_hidden_size(tower: PreTrainedModel) -> int:
    """Width of the tokens a tower emits."""
    if tower.config.model_type == "whisper":
        return tower.config.d_model
    if tower.config.model_type == "timm_wrapper":
        return tower.timm_model.num_features
    return tower.config.hidden_size


def load_pretrained_tower_state(tower: nn.Module, name_or_path: str, modality: str, **kwargs) -> None:
    """
    Load pretrained weights from `name_or_path` into `tower` strictly. A Whisper checkpoint contributes its encoder;
    a positional table longer than the tower's (a shorter Whisper window) is sliced to its first rows; pooling and
    classification heads are dropped. Anything else that does not match is an error.
    """
    pretrained = AutoModel.from_pretrained(name_or_path, **kwargs)
    if getattr(pretrained.config, "model_type", None) == "whisper":
        pretrained = pretrained.get_encoder()
    copy_matching_state(tower, pretrained.state_dict(), name_or_path, modality)


def copy_matching_state(module: nn.Module, source: dict, name_or_path: str, modality: str) -> None:
    """Copy the state dict `source` into `module` strictly (see [`load_pretrained_tower_state`])."""
    target = module.state_dict()
    state, unused = {}, []
    for key, value in source.items():
        if key not in target:
            unused.append(key)
            continue
        expected = target[key].shape
        if value.shape != expected:
            if (
                key.endswith("embed_positions.weight")
                and value.shape[1:] == expected[1:]
                and value.shape[0] > expected[0]
            ):
                value = value[: expected[0]]
            else:
                raise ValueError(
                    f"The {modality} checkpoint {name_or_path!r} has {key} of shape {tuple(value.shape)} but the "
                    f"tower expects {tuple(expected)}: the {modality}_config does not describe this checkpoint. "
                    "Build the config with `from_towers(...)`."
                )
        state[key] = value
    missing = sorted(set(target) - set(state))
    if missing:
        raise ValueError(
            f"The {modality} checkpoint {name_or_path!r} lacks weights the tower needs: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}. Check that it is a {type(module).__name__} checkpoint."
        )
    unexpected = [k for k in unused if not k.startswith(UNUSED_HEADS)]
    if unexpected:
        logger.info(
            f"Ignoring {len(unexpected)} weights of {name_or_path} the tower does not use: {unexpected[:5]}"
        )
    module.load_state_dict(state, strict=True)


def lora_target_modules(towers: dict[str, nn.Module], prefixes: dict[str, str]) -> list[str]:
    """Names (under the model, `prefixes[modality]` + the tower's module name) of the tower modules LoRA adapts, in
    depth order: see `LORA_TARGETS`."""
    targets = []
    for modality, tower in towers.items():
        suffixes = LORA_TARGETS[tower.config.model_type]
        for name, module in tower.named_modules():
            if not name or name.rsplit(".", 1)[-1] not in suffixes:
                continue
            if isinstance(module, nn.Conv2d) and module.groups != 1:
                continue
            if isinstance(module, nn.Linear | nn.Conv2d):
                targets.append(f"{prefixes[modality]}.{name}")
    return targets


def keep_batchnorm_frozen(tower: nn.Module) -> None:
    """Put a frozen tower's BatchNorm layers in eval mode: they keep their statistics even while LoRA adapts it."""
    for module in tower.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@dataclass
class TowerTokens:
    """A tower's tokens: `hidden` `(batch, length, width)`, `mask` `(batch, length)` (True for real tokens) and the
    tower's own output (hidden states and attentions when asked for)."""

    hidden: torch.Tensor
    mask: torch.Tensor
    output: ModelOutput

    def mean(self) -> torch.Tensor:
        """Masked mean over the tokens `(batch, width)`."""
        weights = self.mask.to(self.hidden.dtype)[..., None]
        return (self.hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def text_tokens(
    tower: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    cache: FrozenPrefixCache | None = None,
    **output_kwargs,
) -> TowerTokens:
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    inputs = (
        {"input_ids": input_ids}
        if token_type_ids is None
        else {"input_ids": input_ids, "token_type_ids": token_type_ids}
    )
    hidden = None if output_kwargs else run_split(tower, inputs, attention_mask, cache)
    if hidden is not None:
        return TowerTokens(hidden, attention_mask.bool(), ModelOutput(last_hidden_state=hidden))
    output = tower(**inputs, attention_mask=attention_mask, **output_kwargs)
    return TowerTokens(output.last_hidden_state, attention_mask.bool(), output)


def check_whisper_features(audio_config: PreTrainedConfig, input_features: torch.Tensor | None) -> None:
    if input_features is None:
        raise ValueError(
            "The Whisper audio tower takes `input_features` (log-mel); use the model's processor."
        )
    expected = 2 * audio_config.max_source_positions
    if input_features.shape[-1] != expected:
        raise ValueError(
            f"`input_features` has {input_features.shape[-1]} frames but the audio tower's window takes {expected} "
            f"({audio_window_seconds(audio_config)} s); use the processor saved with this model."
        )


def audio_tokens(
    tower: nn.Module,
    input_features: torch.Tensor | None = None,
    input_values: torch.Tensor | None = None,
    audio_attention_mask: torch.Tensor | None = None,
    token_stride: int = 1,
    cache: FrozenPrefixCache | None = None,
    **output_kwargs,
) -> TowerTokens:
    """Whisper log-mel `input_features` (+ `audio_attention_mask` over the frames) or AST filter-bank
    `input_values`; with `token_stride > 1` the tokens are average-pooled in groups of that many frames."""
    if tower.config.model_type == "whisper":
        check_whisper_features(tower.config, input_features)
        inputs = {"input_features": input_features}
    else:
        if input_values is None:
            raise ValueError(
                "The AST audio tower takes `input_values` (filter banks); use the model's processor."
            )
        inputs = {"input_values": input_values}
    hidden = None if output_kwargs else run_split(tower, inputs, None, cache)
    output = ModelOutput(last_hidden_state=hidden) if hidden is not None else tower(**inputs, **output_kwargs)
    hidden = output.last_hidden_state  # Whisper: (B, frames / 2, d)
    if tower.config.model_type == "whisper" and audio_attention_mask is not None:
        mask = audio_attention_mask[:, ::2].bool()  # stride-2 convolution: one token per two frames
    else:
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    if (
        token_stride > 1
    ):  # (B, T, d) -> (B, ceil(T / stride), d); a pooled token is kept if any of its frames is
        hidden = F.avg_pool1d(hidden.transpose(1, 2), token_stride, token_stride, ceil_mode=True).transpose(
            1, 2
        )
        mask = F.max_pool1d(mask[:, None].float(), token_stride, token_stride, ceil_mode=True)[:, 0].bool()
    return TowerTokens(hidden, mask, output)


def image_tokens(
    tower: nn.Module, pixel_values: torch.Tensor, cache: FrozenPrefixCache | None = None, **output_kwargs
) -> TowerTokens:
    """ViT patch tokens, or the final feature map of a timm convnet flattened into `H * W` tokens."""
    if tower.config.model_type == "timm_wrapper":
        # Convolutions run ~8x faster on CPU in channels-last layout (same numbers).
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
    hidden = None if output_kwargs else run_split(tower, {"pixel_values": pixel_values}, None, cache)
    output = (
        ModelOutput(last_hidden_state=hidden)
        if hidden is not None
        else tower(pixel_values=pixel_values, **output_kwargs)
    )
    hidden = output.last_hidden_state
    if tower.config.model_type == "timm_wrapper":
        hidden = hidden.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
    mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return TowerTokens(hidden, mask, output)


class TowersMixin:
    """
    For a `PreTrainedModel` holding its three towers as `text_model`, `audio_model` and `image_model` (and listing
    the new modules it trains next to them in `trainable_modules()`): tower access, LoRA through PEFT, frozen
    BatchNorm statistics, and the text tower's input embeddings (which PEFT asks for).
    """

    tower_attributes = {"text": "text_model", "audio": "audio_model", "image": "image_model"}
    #: Where the towers read their frozen prefixes' states from during training (see [`enable_frozen_prefix_cache`]).
    frozen_prefix_cache: FrozenPrefixCache | None = None

    def enable_frozen_prefix_cache(self, cache: FrozenPrefixCache | None) -> None:
        """Read the towers' frozen-prefix states from `cache` (computing each input once), or stop with `None`. The
        outputs do not change: a frozen prefix always runs without dropout and without gradients."""
        self.frozen_prefix_cache = cache

    def frozen_prefixes(self) -> dict[str, int]:
        """For each tower, how many leading stages (input stage, then layers) no trainable parameter touches."""
        return {modality: frozen_prefix_length(tower) for modality, tower in self.towers().items()}

    def towers(self) -> dict[str, nn.Module]:
        return {modality: getattr(self, attribute) for modality, attribute in self.tower_attributes.items()}

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    def train(self, mode: bool = True):
        super().train(mode)
        for tower in self.towers().values():
            if self.config.freeze_encoders:
                keep_batchnorm_frozen(tower)
            for module in frozen_prefix_modules(tower):  # a frozen prefix runs as in inference: no dropout
                module.eval()
        if getattr(self, "speech_recognizer", None) is not None:
            self.speech_recognizer.eval()  # frozen: never dropout, never trained
        return self

    def trainable_modules(self) -> list[str]:
        """The new (non-tower) modules trained next to LoRA; PEFT keeps them as `modules_to_save`."""
        raise NotImplementedError

    def lora_target_modules(self) -> list[str]:
        """Names of the tower modules LoRA adapts: attention query/value projections (pointwise convs for timm)."""
        return lora_target_modules(self.towers(), self.tower_attributes)

    def lora_config(
        self, r: int = 8, alpha: int = 16, dropout: float = 0.2, target_modules: list[str] | None = None
    ):
        """The PEFT `LoraConfig` of [`apply_lora`] (seed defaults r=8, alpha=16, dropout=0.2)."""
        from peft import LoraConfig

        return LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=self.lora_target_modules() if target_modules is None else target_modules,
            modules_to_save=self.trainable_modules(),
        )

    def apply_lora(
        self, r: int = 8, alpha: int = 16, dropout: float = 0.2, target_modules: list[str] | None = None
    ):
        """
        Wrap the model with PEFT LoRA on the towers' attention query/value projections (see
        [`lora_target_modules`]); the new modules stay fully trainable (`modules_to_save`). Returns the `PeftModel`;
        `merge_and_unload()` gives back a plain model.
        """
        from peft import get_peft_model

        peft_model = get_peft_model(
            self, self.lora_config(r=r, alpha=alpha, dropout=dropout, target_modules=target_modules)
        )
        for name in ("logit_scale", "logit_bias"):  # bare parameters: PEFT freezes them, but they train
            parameter = getattr(self, name, None)
            if isinstance(parameter, nn.Parameter):
                parameter.requires_grad_(True)
        return peft_model


# ------------------------------------------------------------------------------------------------ frozen prefixes
@dataclass
class TowerStages:
    """A tower seen as `embed` (its input stage) -> `layers` -> `final`, so that it can run in two halves: the frozen
    prefix (the input stage and the first layers, which no trainable parameter touches) and the rest.

    `embed(tower, inputs)` gives the states entering the first layer; `layers(tower)` lists the layers;
    `mask(tower, states, attention_mask)` is what each layer takes as its mask; `final(tower, states)` turns the last
    layer's states into the tower's `last_hidden_state`; `embed_modules(tower)` are the input stage's modules."""

    embed: Callable
    embed_modules: Callable
    layers: Callable
    final: Callable
    mask: Callable = staticmethod(lambda tower, states, attention_mask: None)
    layers_take_mask: bool = True

    def run(self, layers, states, mask):
        for layer in layers:
            states = layer(states, mask) if self.layers_take_mask else layer(states)
        return states


def _bidirectional_mask(tower, states, attention_mask):
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=tower.config, inputs_embeds=states, attention_mask=attention_mask)


def _whisper_embed(tower, inputs):
    check_whisper_features(tower.config, inputs["input_features"])
    states = F.gelu(tower.conv1(inputs["input_features"]))
    states = F.gelu(tower.conv2(states)).permute(0, 2, 1)
    positions = torch.arange(tower.embed_positions.num_embeddings, device=states.device)
    return F.dropout(states + tower.embed_positions(positions), p=tower.dropout, training=tower.training)


def _timm_embed(tower, inputs):
    pixel_values = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
    return tower.timm_model.bn1(tower.timm_model.conv_stem(pixel_values))


def _timm_final(tower, states):
    return tower.timm_model.bn2(tower.timm_model.conv_head(states))


_BERT_LIKE = TowerStages(
    embed=lambda tower, inputs: tower.embeddings(
        input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids")
    ),
    embed_modules=lambda tower: [tower.embeddings],
    layers=lambda tower: list(tower.encoder.layer),
    final=lambda tower, states: states,
    mask=_bidirectional_mask,
)
_VIT_LIKE = TowerStages(
    embed=lambda tower, inputs: tower.embeddings(
        inputs["pixel_values"].to(tower.embeddings.patch_embeddings.projection.weight.dtype)
    ),
    embed_modules=lambda tower: [tower.embeddings],
    layers=lambda tower: list(tower.layers),
    final=lambda tower, states: tower.layernorm(states),
)
#: How to run each tower family in halves (families without an entry are never split: they run whole).
TOWER_STAGES: dict[str, TowerStages] = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert", "electra"), _BERT_LIKE),
    **dict.fromkeys(("vit", "deit"), _VIT_LIKE),
    "audio-spectrogram-transformer": TowerStages(
        embed=lambda tower, inputs: tower.embeddings(inputs["input_values"]),
        embed_modules=lambda tower: [tower.embeddings],
        layers=lambda tower: list(tower.layers),
        final=lambda tower, states: tower.layernorm(states),
    ),
    "whisper": TowerStages(
        embed=_whisper_embed,
        embed_modules=lambda tower: [tower.conv1, tower.conv2, tower.embed_positions],
        layers=lambda tower: list(tower.layers),
        final=lambda tower, states: tower.layer_norm(states),
    ),
    "timm_wrapper": TowerStages(
        embed=_timm_embed,
        embed_modules=lambda tower: [tower.timm_model.conv_stem, tower.timm_model.bn1],
        layers=lambda tower: [block for stage in tower.timm_model.blocks for block in stage],
        final=_timm_final,
        layers_take_mask=False,
    ),
}


def frozen_prefix_length(tower: nn.Module) -> int:
    """How many leading stages of `tower` (its input stage counts as the first, then each layer) hold no trainable
    parameter, so their output is the same at every step: 0 when the input stage itself trains."""
    stages = TOWER_STAGES.get(tower.config.model_type)
    if stages is None:
        return 0
    modules = [stages.embed_modules(tower), *([layer] for layer in stages.layers(tower))]
    for index, group in enumerate(modules):
        if any(p.requires_grad for module in group for p in module.parameters()):
            return index
    return len(modules)


def frozen_prefix_modules(tower: nn.Module) -> list[nn.Module]:
    """The modules of the frozen prefix (see [`frozen_prefix_length`])."""
    return prefix_modules(tower, frozen_prefix_length(tower))


def prefix_modules(tower: nn.Module, length: int) -> list[nn.Module]:
    """The modules of `tower`'s first `length` stages: its input stage, then `length - 1` layers."""
    if not length:
        return []
    stages = TOWER_STAGES[tower.config.model_type]
    return [*stages.embed_modules(tower), *stages.layers(tower)[: length - 1]]


def update_with_weights(digest, modules: list[nn.Module]) -> None:
    """Feed the names and bytes of every tensor of `modules`' state dicts to `digest` (a `hashlib` object)."""
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())


def run_prefix(tower: nn.Module, length: int, inputs: dict, attention_mask=None) -> torch.Tensor:
    """The states after the first `length` stages (`length >= 1`): the input stage, then `length - 1` layers."""
    stages = TOWER_STAGES[tower.config.model_type]
    states = stages.embed(tower, inputs)
    return stages.run(stages.layers(tower)[: length - 1], states, stages.mask(tower, states, attention_mask))


def run_tail(tower: nn.Module, length: int, states: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """The tower's `last_hidden_state` from the states after its first `length` stages."""
    stages = TOWER_STAGES[tower.config.model_type]
    states = stages.run(
        stages.layers(tower)[length - 1 :], states, stages.mask(tower, states, attention_mask)
    )
    return stages.final(tower, states)


def run_split(tower: nn.Module, inputs: dict, attention_mask=None, cache: FrozenPrefixCache | None = None):
    """The tower's `last_hidden_state`, its frozen prefix computed without gradients (or read from `cache`), or None
    when the tower cannot be split (its family has no `TOWER_STAGES` entry, or its input stage trains)."""
    length = frozen_prefix_length(tower)
    if not length:
        return None
    if cache is not None:
        states = cache.prefix_states(tower, length, inputs, attention_mask)
    else:
        with torch.no_grad():
            states = run_prefix(tower, length, inputs, attention_mask)
    return run_tail(tower, length, states, attention_mask)


class FrozenPrefixCache:
    """
    The states of towers' frozen prefixes (see [`frozen_prefix_length`]), computed once per input and reused: across
    the epochs of a run and, saved under `folder`, across runs. Entries are addressed by content: the tower's family,
    its prefix length and a digest of the prefix's weights name a namespace, and a digest of each row's input (the
    caption's real tokens, the log-mel frames, the pixels) names the row. A changed dataset or tower therefore never
    reads stale states, and no layer that trains (e.g. under LoRA) is ever cached.

    Args:
        folder (`str` or `os.PathLike`, *optional*): where namespaces are saved (`<namespace>.safetensors`) by
            [`save`] and loaded from on first use; in memory only without it.
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.entries: dict[str, dict[str, torch.Tensor]] = {}
        self.names: dict[int, tuple[str, int]] = {}  # id(tower) -> (namespace, prefix length)
        self.stats: dict[str, dict[str, int]] = {}
        self._dirty: set[str] = set()

    def namespace(self, tower: nn.Module, length: int) -> str:
        """The namespace of `tower`'s first `length` stages: family, length and a digest of their weights."""
        known = self.names.get(id(tower))
        if known is not None and known[1] == length:
            return known[0]
        digest = hashlib.sha256(f"{tower.config.model_type}:{length}".encode())
        update_with_weights(digest, prefix_modules(tower, length))
        namespace = f"{tower.config.model_type}-{length}-{digest.hexdigest()[:16]}"
        self.names[id(tower)] = (namespace, length)
        self._load(namespace)
        return namespace

    def prefix_states(self, tower: nn.Module, length: int, inputs: dict, attention_mask=None) -> torch.Tensor:
        """The prefix states of a batch, computing (and keeping) only the rows not seen before."""
        namespace = self.namespace(tower, length)
        entries = self.entries.setdefault(namespace, {})
        stats = self.stats.setdefault(namespace, {"hits": 0, "misses": 0})
        keys, lengths = self._row_keys(inputs, attention_mask)
        missing = [i for i, key in enumerate(keys) if key not in entries]
        if missing:
            rows = {name: value[missing] for name, value in inputs.items() if value is not None}
            mask = attention_mask[missing] if attention_mask is not None else None
            with torch.no_grad(), torch.autocast(device_type=_device_type(inputs), enabled=False):
                computed = run_prefix(tower, length, rows, mask)
            for position, row in enumerate(missing):
                entries[keys[row]] = computed[position, : lengths[row]].detach().to("cpu", copy=True)
            self._dirty.add(namespace)
        stats["hits"] += len(keys) - len(missing)
        stats["misses"] += len(missing)
        first = entries[keys[0]]
        length_of_batch = attention_mask.shape[1] if attention_mask is not None else first.shape[0]
        batch = first.new_zeros((len(keys), length_of_batch, *first.shape[1:]))
        for row, key in enumerate(keys):
            batch[row, : lengths[row]] = entries[key]
        device = next(iter(inputs.values())).device
        return batch.to(device)

    @staticmethod
    def _row_keys(inputs: dict, attention_mask) -> tuple[list[str], list[int | None]]:
        """A digest of each row's input (its real tokens only, for text) and the length of its states."""
        names = sorted(name for name, value in inputs.items() if value is not None)
        size = next(iter(inputs.values())).shape[0]
        keys, lengths = [], []
        for row in range(size):
            length = int(attention_mask[row].sum()) if attention_mask is not None else None
            digest = hashlib.blake2b(digest_size=16)
            for name in names:
                value = inputs[name][row]
                if length is not None:
                    value = value[:length]
                digest.update(name.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            keys.append(digest.hexdigest())
            lengths.append(length)  # None: the whole row
        return keys, lengths

    def summary(self) -> dict[str, dict[str, int]]:
        """Hits, misses and stored rows per namespace."""
        return {
            name: {**stats, "rows": len(self.entries.get(name, {}))} for name, stats in self.stats.items()
        }

    def save(self) -> None:
        """Write the namespaces that gained rows to `folder` (atomically; other processes' rows are kept)."""
        if self.folder is None:
            return
        from filelock import FileLock
        from safetensors.torch import load_file, save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        for namespace in sorted(self._dirty):
            path = self.folder / f"{namespace}.safetensors"
            with FileLock(str(path) + ".lock"):
                stored = load_file(path) if path.exists() else {}
                stored.update(self.entries[namespace])
                temporary = path.with_suffix(f".tmp-{os.getpid()}")
                save_file({k: v.contiguous() for k, v in stored.items()}, temporary)
                os.replace(temporary, path)
        self._dirty.clear()

    def _load(self, namespace: str) -> None:
        if self.folder is None or namespace in self.entries:
            return
        path = self.folder / f"{namespace}.safetensors"
        if path.exists():
            from safetensors.torch import load_file

            self.entries[namespace] = dict(load_file(path))


def _device_type(inputs: dict) -> str:
    return next(iter(inputs.values())).device.type


def describe_frozen_prefix(tower: nn.Module) -> str:
    """A line saying which part of `tower` is its frozen prefix, e.g. `input stage + layers 1-4 of 6`."""
    length = frozen_prefix_length(tower)
    if not length:
        return "nothing (its input stage trains, or its family cannot be split)"
    layers = len(TOWER_STAGES[tower.config.model_type].layers(tower))
    if length == 1:
        return f"input stage only (0 of {layers} layers)"
    return f"input stage + layers 1-{length - 1} of {layers}"
