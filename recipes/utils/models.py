"""Helpers around a retrieval model, whatever wraps it (PEFT, DistributedDataParallel)."""

from __future__ import annotations

from transformers import PreTrainedModel

MODALITIES = ("text", "audio", "image")


def unwrap_model(model) -> PreTrainedModel:
    """The family's model inside DDP / PEFT wrappers."""
    while hasattr(model, "get_base_model") or hasattr(model, "module"):
        if hasattr(model, "module"):  # DistributedDataParallel
            model = model.module
        else:  # PeftModel
            model = model.get_base_model()
    if not hasattr(model, "encode"):
        raise TypeError(f"Expected a retrieval model (possibly wrapped), got {type(model).__name__}.")
    return model


def transcribes_audio(model) -> bool:
    """Whether `model` (possibly wrapped) reads what a frozen recogniser hears next to its audio."""
    return bool(getattr(unwrap_model(model).config, "transcribes_audio", False))
