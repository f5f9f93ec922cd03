"""Model families of cross-modal-zoo. Importing this package registers every family with the Auto* classes.

Each family lives in its own folder and imports only its siblings, so `save_pretrained` copies its code next to
the weights and `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads it anywhere. Pieces several
families share live once in `modeling/common/` and are copied into each family's folder (see `scripts/check_copies.py`).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .cman import CmanConfig, CmanModel, CmanProcessor
from .cross_attention import (
    CrossAttentionConfig,
    CrossAttentionForImageTextMatching,
    CrossAttentionForQuestionAnswering,
    CrossAttentionModel,
    CrossAttentionProcessor,
)
from .early_fusion import (
    EarlyFusionConfig,
    EarlyFusionForImageTextMatching,
    EarlyFusionForQuestionAnswering,
    EarlyFusionModel,
    EarlyFusionProcessor,
)
from .gated_xattn import (
    GatedXAttnConfig,
    GatedXAttnForConditionalGeneration,
    GatedXAttnModel,
    GatedXAttnProcessor,
)
from .late_fusion import LateFusionConfig, LateFusionModel, LateFusionProcessor


def _register(config_class, model_class, processor_class=None, extra_auto_classes=()) -> None:
    """Register a family: `extra_auto_classes` are `(auto class, model class)` pairs beside `AutoModel`."""
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    for auto_class, head_class in extra_auto_classes:
        auto_class.register(config_class, head_class, exist_ok=True)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModel")
    if processor_class is not None:
        AutoProcessor.register(config_class, processor_class, exist_ok=True)
        processor_class.register_for_auto_class("AutoProcessor")


_register(CmanConfig, CmanModel, CmanProcessor)
# The stock zero-shot image pipeline loads its model through AutoModelForZeroShotImageClassification.
_register(
    LateFusionConfig,
    LateFusionModel,
    LateFusionProcessor,
    [(AutoModelForZeroShotImageClassification, LateFusionModel)],
)
# The matching families: AutoModelForPreTraining reads the matching (pre-training) heads, the stock
# visual-question-answering auto class the answer head.
for _config, _model, _matching, _answering, _processor in (
    (EarlyFusionConfig, EarlyFusionModel, EarlyFusionForImageTextMatching, EarlyFusionForQuestionAnswering,
     EarlyFusionProcessor),
    (CrossAttentionConfig, CrossAttentionModel, CrossAttentionForImageTextMatching,
     CrossAttentionForQuestionAnswering, CrossAttentionProcessor),
):  # fmt: skip
    _register(
        _config,
        _model,
        _processor,
        [(AutoModelForPreTraining, _matching), (AutoModelForVisualQuestionAnswering, _answering)],
    )

# The generator: the stock image-text-to-text pipeline loads it through AutoModelForImageTextToText.
_register(
    GatedXAttnConfig,
    GatedXAttnModel,
    GatedXAttnProcessor,
    [(AutoModelForImageTextToText, GatedXAttnForConditionalGeneration)],
)
GatedXAttnForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

__all__ = [
    "CmanConfig",
    "CrossAttentionConfig",
    "CrossAttentionForImageTextMatching",
    "CrossAttentionForQuestionAnswering",
    "CrossAttentionModel",
    "CrossAttentionProcessor",
    "EarlyFusionConfig",
    "EarlyFusionForImageTextMatching",
    "EarlyFusionForQuestionAnswering",
    "EarlyFusionModel",
    "EarlyFusionProcessor",
    "GatedXAttnConfig",
    "GatedXAttnForConditionalGeneration",
    "GatedXAttnModel",
    "GatedXAttnProcessor",
    "CmanModel",
    "CmanProcessor",
    "LateFusionConfig",
    "LateFusionModel",
    "LateFusionProcessor",
]
