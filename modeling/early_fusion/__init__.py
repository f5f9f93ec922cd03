"""Early fusion (single stream, ViLT-like): one transformer over the text tokens and the image (or audio) tokens of
pretrained towers, with image-text matching and visual question answering heads."""

from .configuration_early_fusion import EarlyFusionConfig
from .modeling_early_fusion import (
    EarlyFusionForImageTextMatching,
    EarlyFusionForQuestionAnswering,
    EarlyFusionModel,
    EarlyFusionPreTrainedModel,
)
from .processing_early_fusion import EarlyFusionProcessor

__all__ = [
    "EarlyFusionConfig",
    "EarlyFusionForImageTextMatching",
    "EarlyFusionForQuestionAnswering",
    "EarlyFusionModel",
    "EarlyFusionPreTrainedModel",
    "EarlyFusionProcessor",
]
