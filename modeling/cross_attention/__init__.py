"""Cross-attention fusion (two streams with co-attention layers, LXMERT-like): a text stream and an image (or audio)
stream over pretrained towers, each attending to the other in every layer, with image-text matching and visual
question answering heads."""

from .configuration_cross_attention import CrossAttentionConfig
from .modeling_cross_attention import (
    CrossAttentionForImageTextMatching,
    CrossAttentionForQuestionAnswering,
    CrossAttentionModel,
    CrossAttentionPreTrainedModel,
)
from .processing_cross_attention import CrossAttentionProcessor

__all__ = [
    "CrossAttentionConfig",
    "CrossAttentionForImageTextMatching",
    "CrossAttentionForQuestionAnswering",
    "CrossAttentionModel",
    "CrossAttentionPreTrainedModel",
    "CrossAttentionProcessor",
]
