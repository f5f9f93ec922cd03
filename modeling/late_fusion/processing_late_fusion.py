"""Processor for the late-fusion family: one call turns text, audio and images (any subset) into model inputs."""

from __future__ import annotations

from .processing import CrossModalProcessor


class LateFusionProcessor(CrossModalProcessor):
    r"""
    Wraps the text tower's tokenizer, the audio tower's feature extractor and the image tower's image processor: see
    [`CrossModalProcessor`]. Its tokenizer, feature extractor and image processor are saved where the stock
    zero-shot pipelines look for them.
    """


__all__ = ["LateFusionProcessor"]
