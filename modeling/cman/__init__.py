"""CMAN: Cross-Modal Attention Network (text, audio and image towers + a unified fusion transformer)."""

from .configuration_cman import CmanConfig
from .modeling_cman import TOKEN_TYPE_IDS, CmanModel, CmanOutput, CmanPreTrainedModel
from .processing_cman import CmanProcessor

__all__ = ["TOKEN_TYPE_IDS", "CmanConfig", "CmanModel", "CmanOutput", "CmanPreTrainedModel", "CmanProcessor"]
