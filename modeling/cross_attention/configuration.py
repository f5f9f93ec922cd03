# Copied from modeling.common.configuration: edit modeling/common/configuration.py, then run `make fix-copies`.
"""What the configs of the retrieval families share: three towers read from pretrained checkpoints (or given as
configs), an optional speech recogniser, and checks that name the bad field."""

from __future__ import annotations

import os

from transformers import PreTrainedConfig

from .losses import LOSSES, MAX_MARGIN_NEGATIVES
from .speech import whisper_generation_config
from .towers import (
    audio_window_seconds,
    check_tower_config,
    shorten_whisper_window,
    tower_config_from_pretrained,
)


class CrossModalConfigMixin:
    """
    For a `PreTrainedConfig` with `text_config` / `audio_config` / `image_config`, `<modality>_model_name_or_path`,
    an optional `speech_recognizer_config` and the retrieval loss fields (`loss_type`, `margin`,
    `max_margin_negatives`, `temperature`): `from_towers`, and `check_cross_modal_fields` for `__post_init__`.
    """

    def check_cross_modal_fields(self) -> None:
        name = type(self).__name__
        for modality in ("text", "audio", "image"):
            check_tower_config(getattr(self, f"{modality}_config"), modality, name)
        if self.loss_type not in LOSSES:
            raise ValueError(
                f"{name}.loss_type={self.loss_type!r} is not supported; choose one of {tuple(LOSSES)}."
            )
        if self.max_margin_negatives not in MAX_MARGIN_NEGATIVES:
            raise ValueError(
                f"{name}.max_margin_negatives={self.max_margin_negatives!r} is not supported; choose one of "
                f"{MAX_MARGIN_NEGATIVES}."
            )
        if self.projection_dim < 1:
            raise ValueError(f"{name}.projection_dim must be a positive integer, got {self.projection_dim}.")
        if self.margin < 0:
            raise ValueError(f"{name}.margin must be >= 0, got {self.margin}.")
        if self.temperature <= 0:
            raise ValueError(f"{name}.temperature must be > 0, got {self.temperature}.")
        if self.speech_recognizer_config is not None and self.audio_config.model_type != "whisper":
            raise ValueError(
                f"{name}.speech_recognizer_config needs a Whisper audio tower (its decoder transcribes the clips); the "
                f"audio tower is {self.audio_config.model_type!r}. Set speech_recognizer_config=None."
            )

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"This checkpoint is a {model_type!r} model, not a {cls.model_type!r} one. To use it as a tower, build "
                f"the config with {cls.__name__}.from_towers(text=..., audio=..., image=...)."
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
    ):
        """
        Build a config from three towers. Each tower is a Hub id or folder (its config is read and the name recorded
        so the model's `from_encoders_pretrained` loads its weights), a config object (a tower trained from
        scratch), or `None` for the default (RoBERTa-base, AST, ViT-B/16 configs, random weights).

        `audio_window_seconds` shortens a Whisper encoder to that window (e.g. 5.0 -> 250 positions).
        `transcribe_audio=True` (a pretrained Whisper audio tower) adds the speech recogniser, with the checkpoint's
        generation config; `speech_recognizer_config` may be passed too (its settings) and implies it.
        """
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
