"""PyTorch early fusion (single stream, ViLT-like): one transformer reads the text tokens and the image (or audio)
tokens of the pretrained towers together; heads for image-text matching and visual question answering."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from .configuration_early_fusion import EarlyFusionConfig
from .layers import FusionSegment, FusionTransformer
from .matching import TOKEN_TYPE_IDS, FusedPair, MatchingHeadsMixin, Unimodal
from .retrieval import StrictLoadingMixin
from .towers import TowersMixin, build_tower, tower_hidden_size

#: Components of the parameter table, by top-level attribute.
PARAMETER_GROUPS = {
    "text_model": "text tower",
    "audio_model": "audio tower",
    "image_model": "image tower",
    "text_projection": "projections",
    "audio_projection": "projections",
    "image_projection": "projections",
    "fusion_encoder": "fusion transformer",
    "pooler": "heads",
    "text_itc_projection": "itc projections",
    "image_itc_projection": "itc projections",
    "audio_itc_projection": "itc projections",
    "itm_head": "heads",
    "mlm_head": "heads",
    "mpm_head": "heads",
    "vqa_head": "heads",
}
#: Every saved folder can be loaded by each of these auto classes (the class that reads its heads).
AUTO_CLASSES = {
    "AutoModel": "EarlyFusionModel",
    "AutoModelForPreTraining": "EarlyFusionForImageTextMatching",
    "AutoModelForVisualQuestionAnswering": "EarlyFusionForQuestionAnswering",
}


class EarlyFusionPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    config: EarlyFusionConfig
    config_class = EarlyFusionConfig
    base_model_prefix = "early_fusion"
    input_modalities = ("text", "audio", "image")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["FusionLayer"]
    _tied_weights_keys: dict[str, str] = {}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(self, EarlyFusionModel):
            self.init_matching_weights(module)


class EarlyFusionModel(MatchingHeadsMixin, TowersMixin, EarlyFusionPreTrainedModel):
    """
    Early fusion over a text and an image (or an audio clip) per row. Pass `input_ids`/`attention_mask` and either
    `pixel_values` or the audio inputs (`input_features` / `input_values`), one pair per row: the towers' tokens
    are projected to the fusion width, concatenated (text first) behind a pooling token, and read by one
    transformer. Returns the fused pair (`pooler_output`, the text tokens' states in `last_hidden_state`, the
    image's in `other_hidden_state`, attention probabilities with `output_attentions=True`) and the `itc`
    embeddings of each side. The heads: [`EarlyFusionForImageTextMatching`], [`EarlyFusionForQuestionAnswering`].
    """

    accepts_loss_kwargs = False
    auto_classes = AUTO_CLASSES
    parameter_groups = PARAMETER_GROUPS

    def __init__(self, config: EarlyFusionConfig):
        super().__init__(config)
        self.text_model = build_tower(config.text_config)
        self.audio_model = build_tower(config.audio_config)
        self.image_model = build_tower(config.image_config)
        hidden = config.fusion_encoder_config.hidden_size
        sizes = {modality: tower_hidden_size(tower) for modality, tower in self.towers().items()}
        self.text_projection = nn.Linear(sizes["text"], hidden)
        self.audio_projection = nn.Linear(sizes["audio"], hidden)
        self.image_projection = nn.Linear(sizes["image"], hidden)
        self.fusion_encoder = FusionTransformer(
            config.fusion_encoder_config,
            num_token_types=len(TOKEN_TYPE_IDS),
            pooling_type_id=TOKEN_TYPE_IDS["pooling"],
        )
        self.build_matching_modules(hidden, hidden, sizes)
        self.post_init()
        if config.freeze_encoders:
            for tower in self.towers().values():
                tower.requires_grad_(False)

    def trainable_modules(self) -> list[str]:
        return [
            "text_projection",
            "audio_projection",
            "image_projection",
            "fusion_encoder",
            *self.matching_trainable_modules(),
        ]

    # ------------------------------------------------------------------------------------------------ fusion
    def fuse(
        self, unimodal: Unimodal, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> FusedPair:
        """One transformer over `[pooling token] + text tokens + image (audio) tokens`; the pooling token's final
        state summarises the pair."""
        segments = [
            FusionSegment(TOKEN_TYPE_IDS["text"], unimodal.text, unimodal.text_mask),
            FusionSegment(TOKEN_TYPE_IDS[unimodal.other_modality], unimodal.other, unimodal.other_mask),
        ]
        output = self.fusion_encoder(segments, output_attentions, output_hidden_states)
        text_length = unimodal.text.shape[1]
        return FusedPair(
            pooler_output=output.pooler_output,
            text_states=output.last_hidden_state[:, 1 : 1 + text_length],
            other_states=output.last_hidden_state[:, 1 + text_length :],
            hidden_states=output.hidden_states,
            attentions=output.attentions,
            token_type_ids=output.token_type_ids,
        )


class EarlyFusionForImageTextMatching(EarlyFusionModel):
    """
    [`EarlyFusionModel`] with the image-text matching head: `logits` `(batch, 2)` score whether each row's text
    describes its image (index 1: a match). With `return_loss=True` on a batch of matched pairs it trains `itm` on
    those pairs and on hard negatives mined from the in-batch `itc` similarities, with `itc`, `mlm` and `mpm` as the
    config weights them (ALBEF's pre-training). Re-scores a retriever's top candidates (see the recipes).
    """

    own_objectives = ("itm",)


class EarlyFusionForQuestionAnswering(EarlyFusionModel):
    """
    [`EarlyFusionModel`] with the VQA head: `logits` `(batch, num_labels)` over the answer vocabulary
    (`config.id2label`), trained on VQA soft scores (`labels`) with binary cross-entropy. With
    `config.multitask=True` it also trains the weighted pair objectives on batches of matched pairs.
    """

    own_objectives = ("vqa",)


__all__ = [
    "EarlyFusionForImageTextMatching",
    "EarlyFusionForQuestionAnswering",
    "EarlyFusionModel",
    "EarlyFusionPreTrainedModel",
]
