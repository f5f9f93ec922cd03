"""Model families of cross-modal-zoo. Importing this package registers every family with the Auto* classes.

Each family lives in its own folder and imports only its siblings, so `save_pretrained` copies its code next to
the weights and `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads it anywhere. Pieces several
families share live once in `modeling/common/` and are copied into each family's folder (see `scripts/check_copies.py`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor

from .cman import CmanConfig, CmanModel, CmanProcessor
from .late_fusion import LateFusionConfig, LateFusionModel, LateFusionProcessor


def _register(config_class, model_class, processor_class=None, extra_auto_classes=()) -> None:
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    for auto_class in extra_auto_classes:
        auto_class.register(config_class, model_class, exist_ok=True)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModel")
    if processor_class is not None:
        AutoProcessor.register(config_class, processor_class, exist_ok=True)
        processor_class.register_for_auto_class("AutoProcessor")


_register(CmanConfig, CmanModel, CmanProcessor)
# The stock zero-shot image pipeline loads its model through AutoModelForZeroShotImageClassification.
_register(LateFusionConfig, LateFusionModel, LateFusionProcessor, (AutoModelForZeroShotImageClassification,))

__all__ = [
    "CmanConfig",
    "CmanModel",
    "CmanProcessor",
    "LateFusionConfig",
    "LateFusionModel",
    "LateFusionProcessor",
]
