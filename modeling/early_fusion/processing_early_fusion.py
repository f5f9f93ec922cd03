"""Processor for the early-fusion family: one call turns texts (or questions) and images or audio into inputs."""

from __future__ import annotations

from .processing import CrossModalProcessor


class EarlyFusionProcessor(CrossModalProcessor):
    r"""
    Wraps the text tower's tokenizer, the audio tower's feature extractor and the image tower's image processor: see
    [`CrossModalProcessor`]. For matching and VQA pass one text (a description or a question) per image or clip.
    """


__all__ = ["EarlyFusionProcessor"]
