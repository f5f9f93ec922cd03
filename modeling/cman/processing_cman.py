"""Processor for CMAN: one call turns text, audio and images (any subset) into model inputs."""

from __future__ import annotations

from .processing import CrossModalProcessor


class CmanProcessor(CrossModalProcessor):
    r"""
    Wraps the text tower's tokenizer, the audio tower's feature extractor (AST filter banks or Whisper log-mel) and
    the image tower's image processor: see [`CrossModalProcessor`]. `transcripts=` gives what is said in each clip to
    a CMAN that reads it (otherwise such a CMAN transcribes by itself).
    """


__all__ = ["CmanProcessor"]
