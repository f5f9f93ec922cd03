"""Helpers around a model of the zoo, whatever wraps it (PEFT, DistributedDataParallel)."""

from __future__ import annotations

import hashlib

from transformers import PreTrainedModel

MODALITIES = ("text", "audio", "image")


def unwrap_model(model) -> PreTrainedModel:
    """The family's model inside DDP / PEFT wrappers."""
    while hasattr(model, "get_base_model") or hasattr(model, "module"):
        if hasattr(model, "module"):  # DistributedDataParallel
            model = model.module
        else:  # PeftModel
            model = model.get_base_model()
    if not hasattr(model, "towers"):
        raise TypeError(f"Expected a model of the zoo (possibly wrapped), got {type(model).__name__}.")
    return model


def transcribes_audio(model) -> bool:
    """Whether `model` (possibly wrapped) reads what a frozen recogniser hears next to its audio."""
    return bool(getattr(unwrap_model(model).config, "transcribes_audio", False))


def model_digest(model) -> str:
    """A digest of a model's class and weights (names and bytes of its state dict): what is computed from a model
    and kept (an index, an ONNX export) is tied to it."""
    from modeling.common.towers import update_with_weights

    digest = hashlib.sha256(type(unwrap_model(model)).__name__.encode())
    update_with_weights(digest, [unwrap_model(model)])
    return digest.hexdigest()[:16]
