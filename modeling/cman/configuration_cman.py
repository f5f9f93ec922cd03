"""CMAN (Cross-Modal Attention Network) configuration."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration import CrossModalConfigMixin
from .layers import FusionTransformerConfig
from .speech import SpeechRecognizerConfig


@strict
class CmanConfig(CrossModalConfigMixin, PreTrainedConfig):
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
        late_fusion_residual (`bool`, defaults to `True`): add the fusion transformer's output to a late-fusion
            embedding (each segment's masked-mean tower tokens, linearly projected; the transcript through the text
            projection) whose sum it refines. The fusion's output projection starts at zero, so an untrained CMAN is a
            late-fusion model, and training only moves it away where fusing helps. `False`: the embedding is the
            fusion transformer's pooled output alone.
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
    late_fusion_residual: bool = True
    projection_dim: int = 512
    initializer_range: float = 0.02
    loss_type: str = "max_margin"
    margin: float = 0.2
    max_margin_negatives: str = "hardest"
    temperature: float = 0.07
    learn_temperature: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.check_cross_modal_fields()
        if self.audio_token_stride < 1:
            raise ValueError(
                f"CmanConfig.audio_token_stride must be a positive integer, got {self.audio_token_stride}."
            )


__all__ = ["CmanConfig"]
