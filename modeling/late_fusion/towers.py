# Copied from modeling.common.towers: edit modeling/common/towers.py, then run `make fix-copies`.
"""Pretrained encoders ("towers") of the cross-modal families: which checkpoints can serve as the text, audio and
image tower, how to build and load them strictly, which modules LoRA adapts, and how each turns its input into a
sequence of tokens."""

from __future__ import annotations

import os
from dataclasses import dataclass

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
    **output_kwargs,
) -> TowerTokens:
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
    output = tower(input_ids=input_ids, attention_mask=attention_mask, **extra, **output_kwargs)
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
    **output_kwargs,
) -> TowerTokens:
    """Whisper log-mel `input_features` (+ `audio_attention_mask` over the frames) or AST filter-bank
    `input_values`; with `token_stride > 1` the tokens are average-pooled in groups of that many frames."""
    if tower.config.model_type == "whisper":
        check_whisper_features(tower.config, input_features)
        output = tower(input_features, **output_kwargs)
        hidden = output.last_hidden_state  # (B, frames / 2, d)
        if audio_attention_mask is not None:
            mask = audio_attention_mask[:, ::2].bool()  # stride-2 convolution: one token per two frames
        else:
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    else:
        if input_values is None:
            raise ValueError(
                "The AST audio tower takes `input_values` (filter banks); use the model's processor."
            )
        output = tower(input_values=input_values, **output_kwargs)
        hidden = output.last_hidden_state
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    if (
        token_stride > 1
    ):  # (B, T, d) -> (B, ceil(T / stride), d); a pooled token is kept if any of its frames is
        hidden = F.avg_pool1d(hidden.transpose(1, 2), token_stride, token_stride, ceil_mode=True).transpose(
            1, 2
        )
        mask = F.max_pool1d(mask[:, None].float(), token_stride, token_stride, ceil_mode=True)[:, 0].bool()
    return TowerTokens(hidden, mask, output)


def image_tokens(tower: nn.Module, pixel_values: torch.Tensor, **output_kwargs) -> TowerTokens:
    """ViT patch tokens, or the final feature map of a timm convnet flattened into `H * W` tokens."""
    if tower.config.model_type == "timm_wrapper":
        # Convolutions run ~8x faster on CPU in channels-last layout (same numbers).
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        output = tower(pixel_values=pixel_values, **output_kwargs)
        hidden = output.last_hidden_state.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
    else:
        output = tower(pixel_values=pixel_values, **output_kwargs)
        hidden = output.last_hidden_state
    mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return TowerTokens(hidden, mask, output)


class TowersMixin:
    """
    For a `PreTrainedModel` holding its three towers as `text_model`, `audio_model` and `image_model` (and listing
    the new modules it trains next to them in `trainable_modules()`): tower access, LoRA through PEFT, frozen
    BatchNorm statistics, and the text tower's input embeddings (which PEFT asks for).
    """

    tower_attributes = {"text": "text_model", "audio": "audio_model", "image": "image_model"}

    def towers(self) -> dict[str, nn.Module]:
        return {modality: getattr(self, attribute) for modality, attribute in self.tower_attributes.items()}

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_encoders:
            for tower in self.towers().values():
                keep_batchnorm_frozen(tower)
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
