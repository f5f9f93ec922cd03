"""PyTorch cross-attention fusion (two streams with co-attention layers, LXMERT-like): a text stream and an image
(or audio) stream, each attending to the other in every layer; heads for image-text matching and visual question
answering."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_cross_attention import CrossAttentionConfig
from .layers import (
    POSITION_ENCODINGS,
    FusionAttention,
    FusionLayer,
    FusionTransformerConfig,
    RMSNorm,
    ScaleNorm,
    build_norm,
)
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
    "cross_encoder": "co-attention streams",
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
    "AutoModel": "CrossAttentionModel",
    "AutoModelForPreTraining": "CrossAttentionForImageTextMatching",
    "AutoModelForVisualQuestionAnswering": "CrossAttentionForQuestionAnswering",
}


class CoAttentionLayer(GradientCheckpointingLayer):
    """
    One layer of the two streams (pre-norm): each stream attends to the other (`text + xattn(norm(text),
    norm(other))`, and the same the other way, both from the states before the layer), then each runs its own
    self-attention and feed-forward block ([`FusionLayer`]).
    """

    def __init__(self, config: FusionTransformerConfig):
        super().__init__()
        self.text_cross_norm = build_norm(config)
        self.other_cross_norm = build_norm(config)
        self.text_cross_attention = FusionAttention(config)
        self.other_cross_attention = FusionAttention(config)
        self.text_layer = FusionLayer(config)
        self.other_layer = FusionLayer(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, text, text_mask, other, other_mask, text_rotary=None, other_rotary=None, output_attentions=False
    ):
        normed_text, normed_other = self.text_cross_norm(text), self.other_cross_norm(other)
        text_update, cross = self.text_cross_attention(
            normed_text, other_mask, None, output_attentions, key_value_states=normed_other
        )
        other_update, _ = self.other_cross_attention(
            normed_other, text_mask, None, output_attentions, key_value_states=normed_text
        )
        text = text + self.dropout(text_update)
        other = other + self.dropout(other_update)
        text, text_attention = self.text_layer(text, text_mask, text_rotary, output_attentions)
        other, other_attention = self.other_layer(other, other_mask, other_rotary, output_attentions)
        return text, other, text_attention, other_attention, cross


class CoAttentionEncoder(PreTrainedModel):
    """
    The two streams: each gets a learned pooling token in front, a type embedding (its modality) and positions, then
    [`CoAttentionLayer`]s. A sub-model with its own [`FusionTransformerConfig`], so `set_attn_implementation`
    reaches its attention layers.
    """

    config: FusionTransformerConfig
    config_class = FusionTransformerConfig
    base_model_prefix = "cross_encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["CoAttentionLayer"]

    def __init__(self, config: FusionTransformerConfig):
        super().__init__(config)
        self.text_pooling_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.other_pooling_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.token_type_embeddings = nn.Embedding(len(TOKEN_TYPE_IDS), config.hidden_size)
        self.positions = POSITION_ENCODINGS[config.position_embedding](config)
        self.input_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([CoAttentionLayer(config) for _ in range(config.num_hidden_layers)])
        self.text_final_norm = build_norm(config)
        self.other_final_norm = build_norm(config)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, ScaleNorm):
            init.constant_(module.scale, math.sqrt(module.hidden_size))
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, CoAttentionEncoder):
            init.normal_(module.text_pooling_token, mean=0.0, std=self.config.initializer_range)
            init.normal_(module.other_pooling_token, mean=0.0, std=self.config.initializer_range)

    def _stream(self, tokens, mask, pooling_token, type_id):
        batch_size, length, _ = tokens.shape
        if length + 1 > self.config.max_position_embeddings:
            raise ValueError(
                f"A stream of {length} tokens (+1 pooling token) exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings} of the co-attention layers; raise it or shorten the input."
            )
        hidden = torch.cat([pooling_token.expand(batch_size, -1, -1).to(tokens.dtype), tokens], dim=1)
        mask = torch.cat([torch.ones(batch_size, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        type_ids = torch.full((length + 1,), type_id, device=tokens.device)
        type_ids[0] = TOKEN_TYPE_IDS["pooling"]
        hidden = hidden + self.token_type_embeddings(type_ids)[None].to(hidden.dtype)
        hidden, rotary = self.positions(hidden, torch.arange(length + 1, device=tokens.device))
        return self.input_dropout(hidden), mask[:, None, None, :], rotary

    def forward(
        self, unimodal: Unimodal, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> FusedPair:
        text, text_mask, text_rotary = self._stream(
            unimodal.text, unimodal.text_mask, self.text_pooling_token, TOKEN_TYPE_IDS["text"]
        )
        other, other_mask, other_rotary = self._stream(
            unimodal.other,
            unimodal.other_mask,
            self.other_pooling_token,
            TOKEN_TYPE_IDS[unimodal.other_modality],
        )
        hidden_states = (text,) if output_hidden_states else None
        text_attentions, other_attentions, cross_attentions = (
            ((), (), ()) if output_attentions else (None,) * 3
        )
        for layer in self.layers:
            text, other, text_attention, other_attention, cross = layer(
                text, text_mask, other, other_mask, text_rotary, other_rotary, output_attentions
            )
            if output_hidden_states:
                hidden_states += (text,)
            if output_attentions:
                text_attentions += (text_attention,)
                other_attentions += (other_attention,)
                cross_attentions += (cross,)
        text, other = self.text_final_norm(text), self.other_final_norm(other)
        return FusedPair(
            pooler_output=torch.cat([text[:, 0], other[:, 0]], dim=-1),
            text_states=text[:, 1:],
            other_states=other[:, 1:],
            hidden_states=hidden_states,
            attentions=text_attentions,
            other_attentions=other_attentions,
            cross_attentions=cross_attentions,
        )


class CrossAttentionPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    config: CrossAttentionConfig
    config_class = CrossAttentionConfig
    base_model_prefix = "cross_attention"
    input_modalities = ("text", "audio", "image")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["CoAttentionLayer"]
    _tied_weights_keys: dict[str, str] = {}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(self, CrossAttentionModel):
            self.init_matching_weights(module)


class CrossAttentionModel(MatchingHeadsMixin, TowersMixin, CrossAttentionPreTrainedModel):
    """
    Cross-attention fusion over a text and an image (or an audio clip) per row. Pass `input_ids`/`attention_mask` and
    either `pixel_values` or the audio inputs (`input_features` / `input_values`), one pair per row: the towers'
    tokens are projected to one width and read by two streams that attend to each other in every layer. The pair's
    summary is both pooling tokens, concatenated and pooled. Returns the fused pair (the text stream's states in
    `last_hidden_state`, the other stream's in `other_hidden_state`; with `output_attentions=True` each stream's
    self-attention and the text-to-image cross-attention per layer) and the `itc` embeddings of each side. The
    heads: [`CrossAttentionForImageTextMatching`], [`CrossAttentionForQuestionAnswering`].
    """

    accepts_loss_kwargs = False
    auto_classes = AUTO_CLASSES
    parameter_groups = PARAMETER_GROUPS

    def __init__(self, config: CrossAttentionConfig):
        super().__init__(config)
        self.text_model = build_tower(config.text_config)
        self.audio_model = build_tower(config.audio_config)
        self.image_model = build_tower(config.image_config)
        hidden = config.cross_attention_config.hidden_size
        sizes = {modality: tower_hidden_size(tower) for modality, tower in self.towers().items()}
        self.text_projection = nn.Linear(sizes["text"], hidden)
        self.audio_projection = nn.Linear(sizes["audio"], hidden)
        self.image_projection = nn.Linear(sizes["image"], hidden)
        self.cross_encoder = CoAttentionEncoder(config.cross_attention_config)
        self.build_matching_modules(hidden, 2 * hidden, sizes)
        self.post_init()
        if config.freeze_encoders:
            for tower in self.towers().values():
                tower.requires_grad_(False)

    def trainable_modules(self) -> list[str]:
        return [
            "text_projection",
            "audio_projection",
            "image_projection",
            "cross_encoder",
            *self.matching_trainable_modules(),
        ]

    def fuse(
        self, unimodal: Unimodal, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> FusedPair:
        """The two co-attending streams; the pair's summary is both streams' pooling tokens, concatenated."""
        return self.cross_encoder(unimodal, output_attentions, output_hidden_states)


class CrossAttentionForImageTextMatching(CrossAttentionModel):
    """
    [`CrossAttentionModel`] with the image-text matching head: `logits` `(batch, 2)` score whether each row's text
    describes its image (index 1: a match). With `return_loss=True` on a batch of matched pairs it trains `itm` on
    those pairs and on hard negatives mined from the in-batch `itc` similarities, with `itc`, `mlm` and `mpm` as the
    config weights them. Re-scores a retriever's top candidates (see the recipes).
    """

    own_objectives = ("itm",)


class CrossAttentionForQuestionAnswering(CrossAttentionModel):
    """
    [`CrossAttentionModel`] with the VQA head: `logits` `(batch, num_labels)` over the answer vocabulary
    (`config.id2label`), trained on VQA soft scores (`labels`) with binary cross-entropy. With
    `config.multitask=True` it also trains the weighted pair objectives on batches of matched pairs.
    """

    own_objectives = ("vqa",)


__all__ = [
    "CoAttentionEncoder",
    "CrossAttentionForImageTextMatching",
    "CrossAttentionForQuestionAnswering",
    "CrossAttentionModel",
    "CrossAttentionPreTrainedModel",
]
