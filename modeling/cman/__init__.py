"""CMAN: Cross-Modal Attention Network (text, audio and image towers + a unified fusion transformer)."""

from .configuration_cman import CmanConfig
from .modeling_cman import (
    CmanModel,
    CmanOutput,
    CmanPreTrainedModel,
    format_parameter_table,
    parameter_counts,
)
from .processing_cman import CmanProcessor, CmanTranscribingProcessor

__all__ = [
    "CmanConfig",
    "CmanModel",
    "CmanOutput",
    "CmanPreTrainedModel",
    "CmanProcessor",
    "CmanTranscribingProcessor",
    "format_parameter_table",
    "parameter_counts",
]
