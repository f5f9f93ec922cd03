"""CMAN (Cross-Modal Attention Network) configuration."""

from __future__ import annotations

import os

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .layers import FusionTransformerConfig
from .losses import LOSSES, MAX_MARGIN_NEGATIVES
from .speech import SpeechRecognizerConfig, whisper_generation_config
from .towers import (
    audio_window_seconds,
    check_tower_config,
    shorten_whisper_window,
    tower_config_from_pretrained,
)


@strict
class CmanConfig(PreTrainedConfig):
    r"""
    Configuration of a [`CmanModel`]: three pretrained encoders (text, audio, image), a per-modality projection, a
    unified fusion transformer over the tokens of whichever modalities are present, and one `projection_dim`-d
    space trained with a bidirectional max-margin (VSE++) or InfoNCE loss.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            The text tower: any BERT/RoBERTa-like encoder. Defaults to `RobertaConfig()` (roberta-base).
        audio_config (`dict` or `PreTrainedConfig`, *optional*):
            The audio tower: an `ASTConfig` (defaults to the AudioSet AST) or a `WhisperConfig`, of which only the
            encoder is used. A Whisper `max_source_positions` below 1500 runs the encoder on a shorter window (250 =
            5 s); the positional table is sliced when pretrained weights are loaded.
        image_config (`dict` or `PreTrainedConfig`, *optional*):
            The image tower: a `ViTConfig` (defaults to ViT-B/16 at 224 px) or a `TimmWrapperConfig` whose final
            feature map is flattened into tokens.
        fusion_encoder_config (`dict` or [`FusionTransformerConfig`], *optional*):
            The fusion transformer (defaults: 6 layers, 8 heads, FFN 2048, dropout 0.3, 512 wide, `[CLS]` pooling).
        speech_recognizer_config (`dict` or [`SpeechRecognizerConfig`], *optional*):
            With a Whisper audio tower, also read what is said: a frozen copy of the pretrained Whisper transcribes each
            clip, and the transcript goes through the text tower and joins the audio tokens in the fusion
            transformer as its own segment. `None` (the default): the audio is the sound alone.
        text_model_name_or_path / audio_model_name_or_path / image_model_name_or_path (`str`, *optional*):
            Hub id or folder of each tower's pretrained weights, loaded by [`CmanModel.from_encoders_pretrained`] and
            recorded so a saved model names its bases.
        freeze_encoders (`bool`, defaults to `True`): freeze the towers (adapt them with LoRA).
        audio_token_stride (`int`, defaults to 1): average-pool the audio tower's tokens over this many frames
            before fusion (Whisper emits 50 per second; 2-4 keep speech intelligible at a fraction of the cost).
        projection_dim (`int`, defaults to 512): size of the shared embedding space.
        initializer_range (`float`, defaults to 0.02): std of the normal initialiser of new weights.
        loss_type (`str`, defaults to `"max_margin"`): the loss this model trains with (a key of `LOSSES`:
            `max_margin` (VSE++), `infonce`, `sigmoid`); recipes may schedule another one during a warm-up.
        margin (`float`, defaults to 0.2), max_margin_negatives (`str`, defaults to `"hardest"`): of the max-margin
            loss (`hardest` negative in the batch, as VSE++, or `all`).
        temperature (`float`, defaults to 0.07): the temperature of the similarity logits (initial value when learned).
        learn_temperature (`bool`, defaults to `True`): make the temperature a parameter (`logit_scale`).

    Example:
    ```python
    >>> from modeling.cman import CmanConfig, CmanModel
    >>> config = CmanConfig()  # RoBERTa-base + AST + ViT-B/16 configs, random weights
    >>> model = CmanModel(config)
    ```"""

    model_type = "cman"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="roberta"),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="audio-spectrogram-transformer"),
        "image_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
        "fusion_encoder_config": SubConfigSpec(config_class=FusionTransformerConfig),
        "speech_recognizer_config": SubConfigSpec(config_class=SpeechRecognizerConfig, optional=True),
    }

    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    image_config: dict | PreTrainedConfig | None = None
    fusion_encoder_config: dict | PreTrainedConfig | None = None
    speech_recognizer_config: dict | PreTrainedConfig | None = None
    text_model_name_or_path: str | None = None
    audio_model_name_or_path: str | None = None
    image_model_name_or_path: str | None = None
    freeze_encoders: bool = True
    audio_token_stride: int = 1
    projection_dim: int = 512
    initializer_range: float = 0.02
    loss_type: str = "max_margin"
    margin: float = 0.2
    max_margin_negatives: str = "hardest"
    temperature: float = 0.07
    learn_temperature: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for modality in ("text", "audio", "image"):
            check_tower_config(getattr(self, f"{modality}_config"), modality, "CmanConfig")
        if self.loss_type not in LOSSES:
            raise ValueError(
                f"CmanConfig.loss_type={self.loss_type!r} is not supported; choose one of {tuple(LOSSES)}."
            )
        if self.max_margin_negatives not in MAX_MARGIN_NEGATIVES:
            raise ValueError(
                f"CmanConfig.max_margin_negatives={self.max_margin_negatives!r} is not supported; choose one of "
                f"{MAX_MARGIN_NEGATIVES}."
            )
        for field in ("projection_dim", "audio_token_stride"):
            if getattr(self, field) < 1:
                raise ValueError(
                    f"CmanConfig.{field} must be a positive integer, got {getattr(self, field)}."
                )
        if self.margin < 0:
            raise ValueError(f"CmanConfig.margin must be >= 0, got {self.margin}.")
        if self.temperature <= 0:
            raise ValueError(f"CmanConfig.temperature must be > 0, got {self.temperature}.")
        if self.speech_recognizer_config is not None and self.audio_config.model_type != "whisper":
            raise ValueError(
                "CmanConfig.speech_recognizer_config needs a Whisper audio tower (its decoder transcribes the clips); "
                f"the audio tower is {self.audio_config.model_type!r}. Set speech_recognizer_config=None."
            )

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"This checkpoint is a {model_type!r} model, not a CMAN ({cls.model_type!r}) one. To use it as a CMAN "
                "tower, build the config with CmanConfig.from_towers(text=..., audio=..., image=...)."
            )
        return super().from_dict(config_dict, **kwargs)

    @property
    def transcribes_audio(self) -> bool:
        """Whether the audio carries what a frozen recogniser hears in it (`speech_recognizer_config` is set)."""
        return self.speech_recognizer_config is not None

    @property
    def audio_window_seconds(self) -> float:
        """Seconds of audio the audio tower sees (Whisper window or AST `max_length` frames of 10 ms)."""
        return audio_window_seconds(self.audio_config)

    @classmethod
    def from_towers(
        cls,
        text: str | os.PathLike | PreTrainedConfig | None = None,
        audio: str | os.PathLike | PreTrainedConfig | None = None,
        image: str | os.PathLike | PreTrainedConfig | None = None,
        *,
        audio_window_seconds: float | None = None,
        transcribe_audio: bool = False,
        **kwargs,
    ) -> CmanConfig:
        """
        Build a config from three towers. Each tower is a Hub id or folder (its config is read and the name recorded
        so [`CmanModel.from_encoders_pretrained`] loads its weights), a config object (a tower trained from scratch),
        or `None` for the default (RoBERTa-base, AST, ViT-B/16 configs, random weights).

        `audio_window_seconds` shortens a Whisper encoder to that window (e.g. 5.0 -> 250 positions).
        `transcribe_audio=True` (a pretrained Whisper audio tower) adds the speech recogniser, with the checkpoint's
        generation config; `speech_recognizer_config` may be passed too (its settings) and implies it.

        Example:
        ```python
        >>> config = CmanConfig.from_towers(
        ...     text="towers/minilm-l6", audio="towers/whisper-tiny-en", image="towers/efficientnet-lite0",
        ...     audio_window_seconds=5.0, fusion_encoder_config={"hidden_size": 256, "num_hidden_layers": 2},
        ... )
        ```"""
        sub_configs, names = {}, {}
        for modality, tower in (("text", text), ("audio", audio), ("image", image)):
            if tower is None:
                continue
            if isinstance(tower, PreTrainedConfig):
                sub_configs[f"{modality}_config"] = tower
                continue
            sub_configs[f"{modality}_config"] = tower_config_from_pretrained(tower, modality)
            names[f"{modality}_model_name_or_path"] = str(tower)
        if audio_window_seconds is not None:
            shorten_whisper_window(sub_configs.get("audio_config"), audio_window_seconds)
        recognizer = kwargs.pop("speech_recognizer_config", None)
        if transcribe_audio or recognizer is not None:
            recognizer = dict(
                recognizer.to_dict() if isinstance(recognizer, PreTrainedConfig) else recognizer or {}
            )
            if "audio_model_name_or_path" not in names:
                raise ValueError(
                    "transcribe_audio=True needs a pretrained Whisper checkpoint as the audio tower (a name or folder): "
                    "a recogniser with random weights transcribes nothing."
                )
            recognizer.setdefault(
                "generation_config", whisper_generation_config(names["audio_model_name_or_path"])
            )
            kwargs["speech_recognizer_config"] = recognizer
        return cls(**sub_configs, **names, **kwargs)


__all__ = ["CmanConfig"]
