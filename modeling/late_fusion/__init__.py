"""Late fusion: pretrained text, audio and image towers, each pooled and projected into one space (CLIP-, SigLIP- and
CLAP-style); the ablation baseline of the zoo."""

from .configuration_late_fusion import LateFusionConfig
from .modeling_late_fusion import LateFusionModel, LateFusionOutput, LateFusionPreTrainedModel
from .processing_late_fusion import LateFusionProcessor

__all__ = [
    "LateFusionConfig",
    "LateFusionModel",
    "LateFusionOutput",
    "LateFusionPreTrainedModel",
    "LateFusionProcessor",
]
