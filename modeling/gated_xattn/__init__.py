"""Gated cross-attention generator (Flamingo-style): a frozen pretrained causal language model reads an image or a
sound through a perceiver resampler and zero-initialised tanh-gated cross-attention blocks; captioning and open-ended
question answering with `generate()` and the stock `image-text-to-text` pipeline."""

from .configuration_gated_xattn import GatedXAttnConfig
from .modeling_gated_xattn import (
    GatedXAttnForConditionalGeneration,
    GatedXAttnModel,
    GatedXAttnPreTrainedModel,
)
from .processing_gated_xattn import GatedXAttnProcessor

__all__ = [
    "GatedXAttnConfig",
    "GatedXAttnForConditionalGeneration",
    "GatedXAttnModel",
    "GatedXAttnPreTrainedModel",
    "GatedXAttnProcessor",
]
