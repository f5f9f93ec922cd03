"""Cross-attention fusion (two streams with co-attention layers, LXMERT-like) configuration."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration import CrossModalConfigMixin
from .layers import FusionTransformerConfig
from .matching import check_matching_fields
from .speech import SpeechRecognizerConfig


@strict
class CrossAttentionConfig(CrossModalConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a [`CrossAttentionModel`] and its heads: pretrained text, audio and image towers, whose tokens
    are projected to one width and read by two streams, one for the text and one for the image (or audio), each with
    its own pooling token, modality-type and position embeddings. In every layer each stream first attends to the
    other (co-attention), then to itself, then runs its feed-forward block: seeds/003's bimodal cross-attention
    transformer, as LXMERT's cross-modality encoder.

    Args:
        text_config / audio_config / image_config (`dict` or `PreTrainedConfig`, *optional*):
            The towers, as CMAN accepts them (BERT/RoBERTa-like text; AST or a Whisper encoder; ViT or a timm
            wrapper). Default: RoBERTa-base, AST, ViT-B/16 configs.
        text_model_name_or_path / audio_model_name_or_path / image_model_name_or_path (`str`, *optional*):
            Pretrained weights of each tower, loaded by `from_encoders_pretrained`.
        freeze_encoders (`bool`, defaults to `True`): freeze the towers (adapt them with LoRA).
        cross_attention_config (`dict` or [`FusionTransformerConfig`], *optional*):
            The two streams' layers (both streams share its sizes; each layer holds two cross-attention, two
            self-attention and two feed-forward blocks), with the seeds/004 layer choices (norm, feed-forward,
            positions) as typed fields. Default here: 3 co-attention layers, 8 heads, 512 wide, FFN 2048, dropout 0.1.
        projection_dim (`int`, defaults to 256): size of the `itc` space (towers' pooled features, projected).
        initializer_range (`float`, defaults to 0.02): std of the normal initialiser of the new modules.
        temperature (`float`, defaults to 0.07): temperature of the `itc` logits (and of the hard-negative sampling).
        loss_type / margin / max_margin_negatives: the `itc` loss family's fields (InfoNCE is used).
        itc_weight / itm_weight / mlm_weight / mpm_weight (`float`, defaults to 1.0 / 1.0 / 0.0 / 0.0):
            Weights of the pair objectives (0 switches one off; see `matching.py`).
        vqa_weight (`float`, defaults to 1.0): weight of the answer loss.
        mlm_probability (`float`, defaults to 0.15): share of text tokens the recipes' collator masks.
        mpm_probability (`float`, defaults to 0.25): share of image tokens masked for `mpm`.
        itm_negatives (`str`, defaults to `"sampled"`): hard negatives for `itm`: `sampled` in proportion to the
            `itc` similarity (ALBEF), `hardest`, or `random`; evaluation always takes the hardest.
        multitask (`bool`, defaults to `False`): a question-answering model also trains the weighted pair
            objectives on batches of pairs (interleaved with VQA batches by the recipe).
        id2label / label2id: the answer vocabulary of the question-answering head.
    """

    model_type = "cross_attention"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="roberta"),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="audio-spectrogram-transformer"),
        "image_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
        "cross_attention_config": SubConfigSpec(config_class=FusionTransformerConfig),
        "speech_recognizer_config": SubConfigSpec(config_class=SpeechRecognizerConfig, optional=True),
    }

    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    image_config: dict | PreTrainedConfig | None = None
    cross_attention_config: dict | PreTrainedConfig | None = None
    speech_recognizer_config: dict | PreTrainedConfig | None = None
    text_model_name_or_path: str | None = None
    audio_model_name_or_path: str | None = None
    image_model_name_or_path: str | None = None
    freeze_encoders: bool = True
    projection_dim: int = 256
    initializer_range: float = 0.02
    loss_type: str = "infonce"
    margin: float = 0.2
    max_margin_negatives: str = "hardest"
    temperature: float = 0.07
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    mlm_weight: float = 0.0
    mpm_weight: float = 0.0
    vqa_weight: float = 1.0
    mlm_probability: float = 0.15
    mpm_probability: float = 0.25
    itm_negatives: str = "sampled"
    multitask: bool = False

    def __post_init__(self, **kwargs):
        if self.cross_attention_config is None:
            self.cross_attention_config = {"num_hidden_layers": 3, "dropout": 0.1}
        super().__post_init__(**kwargs)
        self.check_cross_modal_fields()
        check_matching_fields(self)


__all__ = ["CrossAttentionConfig"]
