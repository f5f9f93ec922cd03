"""Late fusion (dual / tri-encoder, CLIP-, SigLIP- and CLAP-style) configuration."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration import CrossModalConfigMixin
from .speech import SpeechRecognizerConfig


@strict
class LateFusionConfig(CrossModalConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a [`LateFusionModel`]: three pretrained encoders (text, audio, image), each pooled (masked mean of
    its tokens) and linearly projected into one `projection_dim`-d space, L2-normalised; a learnable temperature
    (and bias, for the sigmoid loss). Modalities meet only in the similarity of their embeddings: the late-fusion
    baseline of the zoo.

    Args:
        text_config / audio_config / image_config (`dict` or `PreTrainedConfig`, *optional*):
            The towers, as CMAN accepts them (BERT/RoBERTa-like text; AST or a Whisper encoder; ViT or a timm wrapper).
            Default: RoBERTa-base, AST, ViT-B/16 configs.
        speech_recognizer_config (`dict` or [`SpeechRecognizerConfig`], *optional*):
            With a Whisper audio tower, also read what is said: a frozen copy of the pretrained Whisper transcribes
            each clip, the text tower reads the transcript, and its projected embedding is added to the audio's
            before normalisation. `None` (the default): the audio is the sound alone.
        text_model_name_or_path / audio_model_name_or_path / image_model_name_or_path (`str`, *optional*):
            Pretrained weights of each tower, loaded by [`LateFusionModel.from_encoders_pretrained`].
        freeze_encoders (`bool`, defaults to `True`): freeze the towers (adapt them with LoRA, or not at all: a
            linear probe).
        projection_dim (`int`, defaults to 512): size of the shared embedding space.
        initializer_range (`float`, defaults to 0.02): std of the normal initialiser of the projections.
        loss_type (`str`, defaults to `"infonce"`): `infonce` (CLIP), `sigmoid` (SigLIP) or `max_margin` (VSE++).
        margin (`float`, defaults to 0.2), max_margin_negatives (`str`, defaults to `"hardest"`): of `max_margin`.
        temperature (`float`, defaults to 0.07): initial temperature of the similarity logits (CLIP's; SigLIP starts
            from 0.1).
        learn_temperature (`bool`, defaults to `True`): make the temperature a parameter (`logit_scale`).
        logit_bias_init (`float`, defaults to -10.0): initial `logit_bias` of the sigmoid loss (SigLIP's).
    """

    model_type = "late_fusion"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="roberta"),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="audio-spectrogram-transformer"),
        "image_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
        "speech_recognizer_config": SubConfigSpec(config_class=SpeechRecognizerConfig, optional=True),
    }

    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    image_config: dict | PreTrainedConfig | None = None
    speech_recognizer_config: dict | PreTrainedConfig | None = None
    text_model_name_or_path: str | None = None
    audio_model_name_or_path: str | None = None
    image_model_name_or_path: str | None = None
    freeze_encoders: bool = True
    projection_dim: int = 512
    initializer_range: float = 0.02
    loss_type: str = "infonce"
    margin: float = 0.2
    max_margin_negatives: str = "hardest"
    temperature: float = 0.07
    learn_temperature: bool = True
    logit_bias_init: float = -10.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.check_cross_modal_fields()


__all__ = ["LateFusionConfig"]
