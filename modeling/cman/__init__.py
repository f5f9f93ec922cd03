"""CMAN: Cross-Modal Attention Network (text, audio and image towers + a unified fusion transformer)."""

from .configuration_cman import CmanConfig
from .modeling_cman import (
    CmanModel,
    CmanOutput,
    CmanPreTrainedModel,
    format_parameter_table,
    parameter_counts,
)
from .processing_cman import CmanProcessor

__all__ = [
    "CmanConfig",
    "CmanModel",
    "CmanOutput",
    "CmanPreTrainedModel",
    "CmanProcessor",
    "format_parameter_table",
    "parameter_counts",
]
