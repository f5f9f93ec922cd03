"""CMAN (Cross-Modal Attention Network) configuration."""

from __future__ import annotations

import os

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# Allowed values of the string-typed fields, checked in `CmanConfig.__post_init__`.
FUSION_NORMS = ("layernorm", "rmsnorm", "scalenorm")
FUSION_FFNS = ("standard", "glu", "swiglu")
FUSION_POSITIONS = ("learned", "sinusoidal", "rotary")
FUSION_POOLINGS = ("cls", "mean")
LOSS_TYPES = ("max_margin", "infonce")
MAX_MARGIN_NEGATIVES = ("hardest", "all")
FUSION_ACTIVATIONS = ("gelu", "relu", "silu")

# Tower families CMAN knows how to read tokens from.
TEXT_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "deberta-v2")
AUDIO_MODEL_TYPES = ("audio-spectrogram-transformer", "whisper")
VISION_MODEL_TYPES = ("vit", "deit", "timm_wrapper")

# Whisper's encoder emits one token per 20 ms (two mel frames of 10 ms, then a stride-2 convolution).
WHISPER_TOKENS_PER_SECOND = 50


@strict
class CmanConfig(PreTrainedConfig):
    r"""
    Configuration of a [`CmanModel`]: three pretrained encoders (text, audio, image), a per-modality
    projection, a unified fusion transformer over the tokens of whichever modalities are present, and a
    bidirectional max-margin (VSE++) or InfoNCE loss in one `projection_dim`-d space.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the text tower: any BERT/RoBERTa-like encoder. Defaults to `RobertaConfig()` (roberta-base).
        audio_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the audio tower: an `ASTConfig` (defaults to the AudioSet AST) or a `WhisperConfig`, of which
            only the encoder is used. A Whisper `max_source_positions` below 1500 runs the encoder on a shorter
            window (250 = 5 s); the positional table is sliced when pretrained weights are loaded.
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the image tower: a `ViTConfig` (defaults to ViT-B/16 at 224 px) or a `TimmWrapperConfig`
            whose final feature map is flattened into tokens.
        text_model_name_or_path / audio_model_name_or_path / vision_model_name_or_path (`str`, *optional*):
            Hub id or local folder of pretrained weights for each tower, loaded by
            [`CmanModel.from_encoders_pretrained`]. Recorded in the config so a saved model names its bases.
        freeze_encoders (`bool`, defaults to `True`):
            Freeze the three towers (adapt them with LoRA through [`CmanModel.apply_lora`]).
        transcribe_audio (`bool`, defaults to `False`): with a Whisper audio tower, also read what is said. A frozen
            copy of the pretrained Whisper (encoder and decoder, `speech_recognizer`) transcribes each clip greedily
            ([`CmanModel.transcribe`]); the transcript goes through the text tower and the text projection and joins
            the audio tokens in the fusion transformer as its own segment. The recogniser never trains (LoRA does not
            touch it), so transcripts of a dataset can be computed once and reused.
        transcript_max_new_tokens (`int`, defaults to 24), transcript_repetition_penalty (`float`, defaults to 1.5):
            greedy decoding settings of the transcripts (short clips; the penalty stops Whisper's repetition loops
            on a short window).
        speech_recognizer_generation_config (`dict`, *optional*): the Whisper checkpoint's generation config (its
            special tokens and suppressed tokens), recorded by [`CmanConfig.from_towers`].
        audio_token_stride (`int`, defaults to 1): average-pool the audio tower's tokens over this many frames before
            fusion (Whisper emits 50 tokens per second; a stride of 2-4 keeps speech intelligible at a fraction
            of the fusion cost).
        fusion_hidden_size (`int`, defaults to 512): width of the fusion transformer.
        fusion_num_hidden_layers (`int`, defaults to 6), fusion_num_attention_heads (`int`, defaults to 8),
        fusion_intermediate_size (`int`, defaults to 2048): depth, heads and FFN width of the fusion transformer.
        fusion_dropout (`float`, defaults to 0.3): dropout on residual branches and the FFN.
        fusion_attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities.
        fusion_hidden_act (`str`, defaults to `"gelu"`): FFN activation (`gelu`, `relu`, `silu`).
        fusion_norm (`str`, defaults to `"layernorm"`): `layernorm`, `rmsnorm` or `scalenorm`.
        fusion_ffn (`str`, defaults to `"standard"`): `standard`, `glu` or `swiglu` feed-forward.
        fusion_position_embedding (`str`, defaults to `"learned"`): `learned`, `sinusoidal` or `rotary`
            positions, counted within each modality's segment.
        fusion_max_position_embeddings (`int`, defaults to 2048): longest segment of one modality.
        fusion_pooling (`str`, defaults to `"cls"`): pool with a learned `[CLS]` token or a masked mean.
        fusion_layer_norm_eps (`float`, defaults to 1e-6), fusion_rope_theta (`float`, defaults to 10000.0).
        projection_dim (`int`, defaults to 512): size of the shared embedding space.
        initializer_range (`float`, defaults to 0.02): std of the normal initialiser of new weights.
        loss_type (`str`, defaults to `"max_margin"`): `max_margin` (VSE++) or `infonce`.
        margin (`float`, defaults to 0.2): margin of the max-margin loss.
        max_margin_negatives (`str`, defaults to `"hardest"`): `hardest` negative in the batch (VSE++) or the
            sum over `all` negatives (useful as a warm-up).
        temperature (`float`, defaults to 0.07): InfoNCE temperature (initial value when learned).
        learn_temperature (`bool`, defaults to `True`): make the InfoNCE temperature a parameter.
        gather_negatives_across_ranks (`bool`, defaults to `True`): under `torch.distributed`, gather the
            embeddings of all ranks (with gradients) so every rank sees the global batch as negatives.

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
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
    }

    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    text_model_name_or_path: str | None = None
    audio_model_name_or_path: str | None = None
    vision_model_name_or_path: str | None = None
    freeze_encoders: bool = True
    audio_token_stride: int = 1
    transcribe_audio: bool = False
    transcript_max_new_tokens: int = 24
    transcript_repetition_penalty: float = 1.5
    speech_recognizer_generation_config: dict | None = None

    fusion_hidden_size: int = 512
    fusion_num_hidden_layers: int = 6
    fusion_num_attention_heads: int = 8
    fusion_intermediate_size: int = 2048
    fusion_dropout: float = 0.3
    fusion_attention_dropout: float = 0.0
    fusion_hidden_act: str = "gelu"
    fusion_norm: str = "layernorm"
    fusion_ffn: str = "standard"
    fusion_position_embedding: str = "learned"
    fusion_max_position_embeddings: int = 2048
    fusion_pooling: str = "cls"
    fusion_layer_norm_eps: float = 1e-6
    fusion_rope_theta: float = 10000.0
    projection_dim: int = 512
    initializer_range: float = 0.02

    loss_type: str = "max_margin"
    margin: float = 0.2
    max_margin_negatives: str = "hardest"
    temperature: float = 0.07
    learn_temperature: bool = True
    gather_negatives_across_ranks: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        choices = {
            "fusion_norm": FUSION_NORMS,
            "fusion_ffn": FUSION_FFNS,
            "fusion_position_embedding": FUSION_POSITIONS,
            "fusion_pooling": FUSION_POOLINGS,
            "fusion_hidden_act": FUSION_ACTIVATIONS,
            "loss_type": LOSS_TYPES,
            "max_margin_negatives": MAX_MARGIN_NEGATIVES,
        }
        for field, allowed in choices.items():
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(f"CmanConfig.{field}={value!r} is not supported; choose one of {allowed}.")
        for field in (
            "fusion_hidden_size",
            "fusion_num_hidden_layers",
            "fusion_num_attention_heads",
            "fusion_intermediate_size",
            "fusion_max_position_embeddings",
            "projection_dim",
            "audio_token_stride",
            "transcript_max_new_tokens",
        ):
            if getattr(self, field) < 1:
                raise ValueError(
                    f"CmanConfig.{field} must be a positive integer, got {getattr(self, field)}."
                )
        if self.fusion_hidden_size % self.fusion_num_attention_heads:
            raise ValueError(
                f"CmanConfig.fusion_hidden_size ({self.fusion_hidden_size}) must be divisible by "
                f"fusion_num_attention_heads ({self.fusion_num_attention_heads})."
            )
        head_dim = self.fusion_hidden_size // self.fusion_num_attention_heads
        if self.fusion_position_embedding == "rotary" and head_dim % 2:
            raise ValueError(
                f"CmanConfig.fusion_position_embedding='rotary' needs an even head size, got {head_dim} "
                "(fusion_hidden_size / fusion_num_attention_heads)."
            )
        for field in ("fusion_dropout", "fusion_attention_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"CmanConfig.{field} must be in [0, 1), got {getattr(self, field)}.")
        if self.margin < 0:
            raise ValueError(f"CmanConfig.margin must be >= 0, got {self.margin}.")
        if self.temperature <= 0:
            raise ValueError(f"CmanConfig.temperature must be > 0, got {self.temperature}.")
        if self.transcript_repetition_penalty <= 0:
            raise ValueError(
                f"CmanConfig.transcript_repetition_penalty must be > 0, got {self.transcript_repetition_penalty}."
            )
        if self.transcribe_audio and self.audio_config.model_type != "whisper":
            raise ValueError(
                "CmanConfig.transcribe_audio=True needs a Whisper audio tower (its decoder transcribes the clips); "
                f"the audio tower is {self.audio_config.model_type!r}. Set transcribe_audio=False."
            )
        for field, allowed in (
            ("text_config", TEXT_MODEL_TYPES),
            ("audio_config", AUDIO_MODEL_TYPES),
            ("vision_config", VISION_MODEL_TYPES),
        ):
            model_type = getattr(self, field).model_type
            if model_type not in allowed:
                raise ValueError(
                    f"CmanConfig.{field} has model_type {model_type!r}, which CMAN cannot use as a tower; "
                    f"use one of {allowed}."
                )

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"This checkpoint is a {model_type!r} model, not a CMAN ({cls.model_type!r}) one. To use it as a CMAN "
                "tower, build the config with CmanConfig.from_towers(text=..., audio=..., vision=...)."
            )
        return super().from_dict(config_dict, **kwargs)

    @property
    def audio_window_seconds(self) -> float | None:
        """Seconds of audio the audio tower sees (Whisper window or AST `max_length` frames of 10 ms)."""
        if self.audio_config.model_type == "whisper":
            return self.audio_config.max_source_positions / WHISPER_TOKENS_PER_SECOND
        return self.audio_config.max_length / 100.0

    @classmethod
    def from_towers(
        cls,
        text: str | os.PathLike | PreTrainedConfig | None = None,
        audio: str | os.PathLike | PreTrainedConfig | None = None,
        vision: str | os.PathLike | PreTrainedConfig | None = None,
        *,
        audio_window_seconds: float | None = None,
        **kwargs,
    ) -> CmanConfig:
        """
        Build a config from three towers. Each tower is a Hub id or local folder (its config is read and the name
        recorded so [`CmanModel.from_encoders_pretrained`] loads its weights), a config object (a tower trained from
        scratch), or `None` for the default (RoBERTa-base, AST, ViT-B/16 configs, random weights).

        `audio_window_seconds` shortens a Whisper encoder to that window (e.g. 5.0 -> 250 positions). With
        `transcribe_audio=True`, the Whisper checkpoint's generation config is recorded for the speech recogniser.

        Example:
        ```python
        >>> config = CmanConfig.from_towers(
        ...     text="towers/minilm-l6", audio="towers/whisper-tiny-en", vision="towers/efficientnet-lite0",
        ...     audio_window_seconds=5.0, fusion_hidden_size=256,
        ... )
        ```"""
        sub_configs, names = {}, {}
        for modality, tower in (("text", text), ("audio", audio), ("vision", vision)):
            if tower is None:
                continue
            if isinstance(tower, PreTrainedConfig):
                sub_configs[f"{modality}_config"] = tower
                continue
            tower_config = AutoConfig.from_pretrained(tower)
            if modality == "audio" and tower_config.model_type == "whisper":
                # Only the encoder is used; the decoder of a full Whisper checkpoint is ignored.
                tower_config.is_encoder_decoder = False
            sub_configs[f"{modality}_config"] = tower_config
            names[f"{modality}_model_name_or_path"] = str(tower)
            if modality == "audio" and kwargs.get("transcribe_audio"):
                from transformers import GenerationConfig

                try:
                    generation_config = GenerationConfig.from_pretrained(tower)
                except OSError as error:
                    raise ValueError(
                        f"transcribe_audio=True needs the Whisper checkpoint's generation_config.json, which {tower} "
                        "lacks; save the full WhisperForConditionalGeneration checkpoint there."
                    ) from error
                kwargs.setdefault("speech_recognizer_generation_config", generation_config.to_dict())
        audio_config = sub_configs.get("audio_config")
        if audio_window_seconds is not None:
            if audio_config is None or audio_config.model_type != "whisper":
                raise ValueError(
                    "`audio_window_seconds` applies to a Whisper audio tower; pass `audio=` a Whisper."
                )
            positions = round(audio_window_seconds * WHISPER_TOKENS_PER_SECOND)
            if not 1 <= positions <= audio_config.max_source_positions:
                raise ValueError(
                    f"audio_window_seconds={audio_window_seconds} gives {positions} encoder positions; it must be "
                    f"between 0.02 s and {audio_config.max_source_positions / WHISPER_TOKENS_PER_SECOND} s."
                )
            audio_config.max_source_positions = positions
        return cls(**sub_configs, **names, **kwargs)


__all__ = ["CmanConfig"]
