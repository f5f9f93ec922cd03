"""Gated cross-attention generator (Flamingo-style) configuration."""

from __future__ import annotations

import os

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .layers import FusionTransformerConfig
from .towers import check_tower_config, shorten_whisper_window, tower_config_from_pretrained

#: SmolLM2-135M-Instruct's decoder (the default `text_config`; `recipes/towers` converts its weights offline).
SMOLLM2_135M_CONFIG = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}


def decoder_width(text_config) -> int | None:
    """The decoder's hidden size, from a config object or a dict (`hidden_size`, or GPT-2's `n_embd`)."""
    if isinstance(text_config, dict):
        return text_config.get("hidden_size", text_config.get("n_embd"))
    return getattr(text_config, "hidden_size", None)


def default_block_config(width: int, num_hidden_layers: int) -> dict:
    """A resampler / cross-attention block config as wide as the decoder: heads of 64 where the width allows."""
    heads = next(h for h in (width // 64, 8, 4, 2, 1) if h >= 1 and width % h == 0)
    return {
        "hidden_size": width,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * width,
        "dropout": 0.0,
        "position_embedding": "learned",
    }


@strict
class GatedXAttnConfig(PreTrainedConfig):
    r"""
    Configuration of a [`GatedXAttnForConditionalGeneration`]: a frozen pretrained causal language model that reads an
    image or a sound through tanh-gated cross-attention blocks inserted before some of its layers (Flamingo). The
    image (or audio) tower's tokens are summarised by a perceiver resampler into `num_latents` vectors as wide as the
    decoder; every gate starts at 0, so the untrained model is exactly the pretrained decoder.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            The text decoder: any causal LM config (Llama, GPT-2, Qwen2, ...). Default: SmolLM2-135M-Instruct's.
        audio_config / image_config (`dict` or `PreTrainedConfig`, *optional*):
            The towers, as the other families accept them (AST or a Whisper encoder; ViT or a timm wrapper).
            Default: AST and ViT-B/16 configs.
        text_model_name_or_path (`str`, *optional*): a causal LM checkpoint (Hub id or folder) whose weights
            `from_encoders_pretrained` loads into the decoder (e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`, `gpt2`).
        audio_model_name_or_path / image_model_name_or_path (`str`, *optional*): pretrained tower weights.
        freeze_encoders (`bool`, defaults to `True`): freeze the image and audio towers.
        freeze_text_model (`bool`, defaults to `True`): freeze the decoder (adapt it with LoRA).
        resampler_config (`dict` or [`FusionTransformerConfig`], *optional*): the perceiver resampler's layers
            (`num_hidden_layers`, heads, feed-forward, norm); its `hidden_size` must be the decoder's. Default: 2
            layers as wide as the decoder, heads of 64, feed-forward 4x.
        cross_attention_config (`dict` or [`FusionTransformerConfig`], *optional*): the gated cross-attention blocks
            (same fields; `num_hidden_layers` is unused). Default as the resampler's.
        num_latents (`int`, defaults to 64): vectors the resampler gives the decoder per image or clip.
        cross_attention_every (`int`, defaults to 4): a gated block before every n-th decoder layer (layers
            `n-1, 2n-1, ...`, as OpenFlamingo counts them).
        initializer_range (`float`, defaults to 0.02): std of the normal initialiser of the new modules.
        tie_word_embeddings (`bool`, *optional*): share the output layer with the decoder's input embeddings;
            default: as `text_config` says.
    """

    model_type = "gated_xattn"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="audio-spectrogram-transformer"),
        "image_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
        "resampler_config": SubConfigSpec(config_class=FusionTransformerConfig),
        "cross_attention_config": SubConfigSpec(config_class=FusionTransformerConfig),
    }

    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    image_config: dict | PreTrainedConfig | None = None
    resampler_config: dict | PreTrainedConfig | None = None
    cross_attention_config: dict | PreTrainedConfig | None = None
    text_model_name_or_path: str | None = None
    audio_model_name_or_path: str | None = None
    image_model_name_or_path: str | None = None
    freeze_encoders: bool = True
    freeze_text_model: bool = True
    num_latents: int = 64
    cross_attention_every: int = 4
    initializer_range: float = 0.02
    tie_word_embeddings: bool | None = None

    def __post_init__(self, **kwargs):
        if self.text_config is None:
            self.text_config = dict(SMOLLM2_135M_CONFIG)
        width = decoder_width(self.text_config)
        if width is not None:
            if self.resampler_config is None:
                self.resampler_config = default_block_config(width, 2)
            if self.cross_attention_config is None:
                self.cross_attention_config = default_block_config(width, 1)
        super().__post_init__(**kwargs)
        if self.tie_word_embeddings is None:  # the output layer is tied as in the decoder's own checkpoint
            self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        self.check_fields()

    def check_fields(self) -> None:
        name = type(self).__name__
        for modality in ("audio", "image"):
            check_tower_config(getattr(self, f"{modality}_config"), modality, name)
        width = self.text_config.hidden_size
        for field in ("resampler_config", "cross_attention_config"):
            if getattr(self, field).hidden_size != width:
                raise ValueError(
                    f"{name}.{field}.hidden_size is {getattr(self, field).hidden_size} but the decoder is {width} "
                    f"wide: the blocks work at the decoder's width. Set {field}.hidden_size={width} (or leave "
                    f"{field} unset for the default)."
                )
        for field in ("num_latents", "cross_attention_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field} must be a positive integer, got {getattr(self, field)}.")
        if self.cross_attention_every > self.text_config.num_hidden_layers:
            raise ValueError(
                f"{name}.cross_attention_every={self.cross_attention_every} is more than the decoder's "
                f"{self.text_config.num_hidden_layers} layers: no gated block would be inserted."
            )

    @property
    def cross_attention_layers(self) -> list[int]:
        """Indices of the decoder layers a gated cross-attention block runs before."""
        every = self.cross_attention_every
        return [i for i in range(self.text_config.num_hidden_layers) if (i + 1) % every == 0]

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"This checkpoint is a {model_type!r} model, not a {cls.model_type!r} one. To use it as the decoder or "
                f"a tower, build the config with {cls.__name__}.from_pretrained_parts(text=..., image=..., audio=...)."
            )
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_pretrained_parts(
        cls,
        text: str | os.PathLike | PreTrainedConfig | None = None,
        audio: str | os.PathLike | PreTrainedConfig | None = None,
        image: str | os.PathLike | PreTrainedConfig | None = None,
        *,
        audio_window_seconds: float | None = None,
        **kwargs,
    ):
        """
        Build a config from a causal LM and two towers. Each is a Hub id or folder (its config is read and the name
        recorded, so `from_encoders_pretrained` loads its weights), a config object (random weights), or `None` for
        the default (SmolLM2-135M-Instruct's, AST and ViT-B/16 configs). `audio_window_seconds` shortens a Whisper
        encoder to that window (e.g. 5.0 -> 250 positions).
        """
        parts = {}
        if isinstance(text, PreTrainedConfig):
            parts["text_config"] = text
        elif text is not None:
            parts["text_config"] = AutoConfig.from_pretrained(text)
            parts["text_model_name_or_path"] = str(text)
        for modality, tower in (("audio", audio), ("image", image)):
            if isinstance(tower, PreTrainedConfig):
                parts[f"{modality}_config"] = tower
            elif tower is not None:
                parts[f"{modality}_config"] = tower_config_from_pretrained(tower, modality)
                parts[f"{modality}_model_name_or_path"] = str(tower)
        if audio_window_seconds is not None:
            shorten_whisper_window(parts.get("audio_config"), audio_window_seconds)
        return cls(**parts, **kwargs)


__all__ = ["GatedXAttnConfig"]
