"""PyTorch CMAN (Cross-Modal Attention Network): pretrained text/audio/image towers, a unified fusion transformer
over the tokens of whichever modalities are present, and one L2-normalised embedding space."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple

from .configuration_cman import CmanConfig
from .layers import FusionOutput, FusionSegment, FusionTransformer
from .losses import LOSSES, ContrastiveLoss, build_loss
from .retrieval import (
    MODALITIES,
    MODALITY_INPUTS,
    RetrievalOutput,
    StrictLoadingMixin,
    check_combinations,
    check_unknown_kwargs,
    combination_key,
    format_parameter_table,
    parameter_counts,
    present_modalities,
    similarity_logits,
)
from .speech import TranscribingMixin, build_speech_recognizer, load_pretrained_recognizer_state
from .towers import (
    TowersMixin,
    audio_tokens,
    build_tower,
    image_tokens,
    load_pretrained_tower_state,
    text_tokens,
    tower_hidden_size,
)

logger = logging.get_logger(__name__)

#: Type ids of the fusion tokens: one per modality, the pooling token, and the transcript of the audio (text-tower
#: tokens of what the speech recogniser heard, part of the audio input).
TOKEN_TYPE_IDS = {"text": 0, "audio": 1, "image": 2, "pooling": 3, "transcript": 4}
#: The modality each token type belongs to (a transcript describes its audio).
MODALITY_OF_TOKEN_TYPE = {0: "text", 1: "audio", 2: "image", 4: "audio"}
#: Components of the parameter table, by top-level attribute.
PARAMETER_GROUPS = {
    "text_model": "text tower",
    "audio_model": "audio tower",
    "image_model": "image tower",
    "text_projection": "modality projections",
    "audio_projection": "modality projections",
    "image_projection": "modality projections",
    "fusion_encoder": "fusion transformer",
    "embedding_projection": "embedding projection",
    "text_pooled_projection": "late-fusion projections",
    "audio_pooled_projection": "late-fusion projections",
    "image_pooled_projection": "late-fusion projections",
    "speech_recognizer": "speech recogniser (frozen)",
    "logit_scale": "temperature",
}


@dataclass
class CmanOutput(RetrievalOutput):
    r"""
    The [`RetrievalOutput`] of CMAN (each `<modality>_model_output` is that modality's fusion pass: the fusion
    transformer's hidden states, its attentions and the type id of every token), plus:

    fused_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*, with `fuse=True`):
        L2-normalised embedding of all the modalities passed, fused in one sequence (a composed query).
    fused_model_output ([`FusionOutput`], *optional*, with `fuse=True`): the fusion pass of that sequence.
    """

    fused_embeds: torch.FloatTensor | None = None
    fused_model_output: FusionOutput | None = None


class CmanPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    config: CmanConfig
    config_class = CmanConfig
    base_model_prefix = "cman"
    input_modalities = ("text", "audio", "image")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["FusionLayer"]
    _tied_weights_keys: dict[str, str] = {}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, CmanModel):
            init.constant_(module.logit_scale, math.log(1.0 / self.config.temperature))
            if self.config.late_fusion_residual:  # the fusion starts as a zero refinement of late fusion
                init.zeros_(module.embedding_projection.weight)


class CmanModel(TranscribingMixin, TowersMixin, CmanPreTrainedModel):
    """
    Cross-Modal Attention Network. Pass any subset of `input_ids`/`attention_mask` (text), `input_features` or
    `input_values` (audio: Whisper log-mel or AST filter banks) and `pixel_values` (images). Each modality gets its
    own embedding through the fusion transformer; with `fuse=True` and two or more modalities the fused
    (composed-query) embedding is returned too. With `config.speech_recognizer_config`, the audio also carries its
    transcript: the frozen `speech_recognizer` hears the words (or `transcript_input_ids` bring them), the text tower
    reads them, and the fusion transformer sees them next to the sound.
    """

    accepts_loss_kwargs = False
    #: Type id of every kind of token in the fusion transformer (for attention maps).
    fusion_token_types = TOKEN_TYPE_IDS

    def __init__(self, config: CmanConfig):
        super().__init__(config)
        self.text_model = build_tower(config.text_config)
        self.audio_model = build_tower(config.audio_config)
        self.image_model = build_tower(config.image_config)
        hidden = config.fusion_encoder_config.hidden_size
        self.text_projection = nn.Linear(tower_hidden_size(self.text_model), hidden)
        self.audio_projection = nn.Linear(tower_hidden_size(self.audio_model), hidden)
        self.image_projection = nn.Linear(tower_hidden_size(self.image_model), hidden)
        self.fusion_encoder = FusionTransformer(
            config.fusion_encoder_config,
            num_token_types=len(TOKEN_TYPE_IDS),
            pooling_type_id=TOKEN_TYPE_IDS["pooling"],
        )
        self.embedding_projection = nn.Linear(hidden, config.projection_dim, bias=False)
        if config.late_fusion_residual:
            self.text_pooled_projection = nn.Linear(
                tower_hidden_size(self.text_model), config.projection_dim, bias=False
            )
            self.audio_pooled_projection = nn.Linear(
                tower_hidden_size(self.audio_model), config.projection_dim, bias=False
            )
            self.image_pooled_projection = nn.Linear(
                tower_hidden_size(self.image_model), config.projection_dim, bias=False
            )
        # A frozen pretrained Whisper that transcribes the audio; never trained, never adapted.
        self.speech_recognizer = None
        if config.speech_recognizer_config is not None:
            self.speech_recognizer = build_speech_recognizer(
                config.audio_config, config.speech_recognizer_config
            )
        # Log of the inverse temperature, as CLIP's; a parameter when learned by a loss that uses it.
        logit_scale = torch.tensor(math.log(1.0 / config.temperature))
        if config.learn_temperature and LOSSES[config.loss_type].uses_logit_scale:
            self.logit_scale = nn.Parameter(logit_scale)
        else:
            self.register_buffer("logit_scale", logit_scale, persistent=False)
        self.post_init()
        if config.freeze_encoders:
            for tower in self.towers().values():
                tower.requires_grad_(False)
        if self.speech_recognizer is not None:
            self.speech_recognizer.requires_grad_(False)

    def trainable_modules(self) -> list[str]:
        modules = [
            "text_projection",
            "audio_projection",
            "image_projection",
            "fusion_encoder",
            "embedding_projection",
        ]
        if self.config.late_fusion_residual:
            modules += ["text_pooled_projection", "audio_pooled_projection", "image_pooled_projection"]
        return modules

    def _pooled(self, projection_name: str, tokens) -> torch.Tensor | None:
        """A segment's late-fusion summary: its masked-mean tower tokens through `projection_name`."""
        if not self.config.late_fusion_residual:
            return None
        return getattr(self, projection_name)(tokens.mean())

    @classmethod
    def from_encoders_pretrained(cls, config: CmanConfig, **from_pretrained_kwargs) -> CmanModel:
        """
        Build a CMAN from `config` and load the pretrained weights of every tower whose `<modality>_model_name_or_path`
        is set (Hub id or folder), and of the speech recogniser; new parts start from random weights. Use
        [`CmanConfig.from_towers`] to write such a config.
        """
        model = cls(config)
        for modality, tower in model.towers().items():
            name = getattr(config, f"{modality}_model_name_or_path")
            if name:
                load_pretrained_tower_state(tower, name, modality, **from_pretrained_kwargs)
        if model.speech_recognizer is not None:
            if not config.audio_model_name_or_path:
                raise ValueError(
                    "A speech recogniser needs a pretrained Whisper checkpoint (audio_model_name_or_path); a "
                    "recogniser with random weights transcribes nothing."
                )
            load_pretrained_recognizer_state(
                model.speech_recognizer, config.audio_model_name_or_path, **from_pretrained_kwargs
            )
        return model

    def parameter_table(self) -> str:
        """A Markdown table of total / trainable / LoRA parameters per component."""
        return format_parameter_table(parameter_counts(self, PARAMETER_GROUPS))

    def retrieval_loss(self) -> ContrastiveLoss:
        """The loss module of `config.loss_type` (with its margin and negatives)."""
        if self.config.loss_type == "max_margin":
            return build_loss(
                "max_margin", margin=self.config.margin, negatives=self.config.max_margin_negatives
            )
        return build_loss(self.config.loss_type)

    # ------------------------------------------------------------------------------------------------ segments
    def _text_segment(
        self, input_ids, attention_mask=None, token_type_ids=None, type_id=TOKEN_TYPE_IDS["text"]
    ):
        tokens = text_tokens(
            self.text_model, input_ids, attention_mask, token_type_ids, self.frozen_prefix_cache
        )
        pooled = self._pooled("text_pooled_projection", tokens)
        return FusionSegment(type_id, self.text_projection(tokens.hidden), tokens.mask, pooled)

    def _audio_segments(
        self,
        input_features=None,
        input_values=None,
        audio_attention_mask=None,
        transcript_input_ids=None,
        transcript_attention_mask=None,
    ) -> list[FusionSegment]:
        """The audio input as fusion segments: the audio tower's tokens and, with a speech recogniser, the
        transcript's (transcribed here when `transcript_input_ids` are not given)."""
        tokens = audio_tokens(
            self.audio_model,
            input_features,
            input_values,
            audio_attention_mask,
            self.config.audio_token_stride,
            self.frozen_prefix_cache,
        )
        pooled = self._pooled("audio_pooled_projection", tokens)
        segments = [
            FusionSegment(TOKEN_TYPE_IDS["audio"], self.audio_projection(tokens.hidden), tokens.mask, pooled)
        ]
        if self.speech_recognizer is not None:
            if transcript_input_ids is None:
                transcript_input_ids, transcript_attention_mask = self.transcript_inputs(input_features)
            segments.append(
                self._text_segment(
                    transcript_input_ids, transcript_attention_mask, type_id=TOKEN_TYPE_IDS["transcript"]
                )
            )
        elif transcript_input_ids is not None:
            raise ValueError(
                "`transcript_input_ids` were passed, but this CMAN does not read transcripts "
                "(config.speech_recognizer_config is None)."
            )
        return segments

    def _image_segment(self, pixel_values):
        tokens = image_tokens(self.image_model, pixel_values, self.frozen_prefix_cache)
        pooled = self._pooled("image_pooled_projection", tokens)
        return FusionSegment(
            TOKEN_TYPE_IDS["image"], self.image_projection(tokens.hidden), tokens.mask, pooled
        )

    def _segments(self, **inputs) -> dict[str, list[FusionSegment]]:
        """The fusion segments of each modality passed (each tower runs once)."""
        segments = {}
        modalities = present_modalities(inputs)
        if "text" in modalities:
            segments["text"] = [
                self._text_segment(
                    inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids")
                )
            ]
        if "audio" in modalities:
            segments["audio"] = self._audio_segments(
                inputs.get("input_features"),
                inputs.get("input_values"),
                inputs.get("audio_attention_mask"),
                inputs.get("transcript_input_ids"),
                inputs.get("transcript_attention_mask"),
            )
        elif inputs.get("transcript_input_ids") is not None:
            raise ValueError("`transcript_input_ids` describe audio: pass the audio (`input_features`) too.")
        if "image" in modalities:
            segments["image"] = [self._image_segment(inputs["pixel_values"])]
        if not segments:
            raise ValueError(
                "CmanModel needs at least one modality: input_ids (text), input_features/input_values (audio) or "
                "pixel_values (images)."
            )
        return segments

    def _fuse(
        self, segments: list[FusionSegment], output_attentions=False, output_hidden_states=False
    ) -> FusionOutput:
        """One fusion pass; `pooler_output` is the L2-normalised embedding `(batch, projection_dim)`."""
        sizes = {segment.type_id: segment.tokens.shape[0] for segment in segments}
        batch_sizes = list(sizes.values())
        if any(
            size != batch_sizes[0] for size in batch_sizes[1:]
        ):  # compared, not hashed: torch.export traces it
            raise ValueError(
                f"Fusing modalities needs the same batch size for each, got {sizes} (by token type). Embed "
                "unpaired inputs one modality at a time."
            )
        output = self.fusion_encoder(segments, output_attentions, output_hidden_states)
        embedding = self.embedding_projection(output.pooler_output)
        if self.config.late_fusion_residual:
            # The fusion refines late fusion's embedding: each modality's segments (the transcript's with its audio)
            # summed and L2-normalised, then summed over the modalities, as a late-fusion composed query is.
            per_modality: dict[str, torch.Tensor] = {}
            for segment in segments:
                modality = MODALITY_OF_TOKEN_TYPE[segment.type_id]
                per_modality[modality] = per_modality.get(modality, 0) + segment.pooled
            embedding = embedding + sum(F.normalize(pooled, dim=-1) for pooled in per_modality.values())
        output.pooler_output = F.normalize(embedding, dim=-1)
        return output

    # --------------------------------------------------------------------------------------- retrieval interface
    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> FusionOutput:
        """The text's fusion pass; `pooler_output` is the L2-normalised embedding `(batch_size, projection_dim)`."""
        return self._fuse(
            [self._text_segment(input_ids, attention_mask, token_type_ids)],
            *self._output_flags(output_attentions, output_hidden_states),
        )

    @can_return_tuple
    def get_audio_features(
        self,
        input_features: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        transcript_input_ids: torch.Tensor | None = None,
        transcript_attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> FusionOutput:
        """The audio's fusion pass (with its transcript when the model reads one: given, or transcribed here);
        `pooler_output` is the L2-normalised embedding `(batch_size, projection_dim)`."""
        return self._fuse(
            self._audio_segments(
                input_features,
                input_values,
                audio_attention_mask,
                transcript_input_ids,
                transcript_attention_mask,
            ),
            *self._output_flags(output_attentions, output_hidden_states),
        )

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> FusionOutput:
        """The image's fusion pass; `pooler_output` is the L2-normalised embedding `(batch_size, projection_dim)`."""
        return self._fuse(
            [self._image_segment(pixel_values)], *self._output_flags(output_attentions, output_hidden_states)
        )

    def encode(self, combinations: list[tuple[str, ...]], **inputs) -> dict[tuple[str, ...], torch.Tensor]:
        """
        Embed several modality combinations of the same batch, running each tower once: e.g.
        `combinations=[("text",), ("image",), ("text", "audio")]` gives the text, image and text+audio (composed
        query) embeddings, each `(batch_size, projection_dim)` and L2-normalised.
        """
        inputs.pop("group_ids", None)  # a collator's batch carries them; they do not embed
        check_unknown_kwargs("CmanModel.encode", {k: v for k, v in inputs.items() if not self._is_input(k)})
        return self._compose(self._segments(**inputs), combinations)

    def _compose(
        self, segments: dict[str, list[FusionSegment]], combinations
    ) -> dict[tuple[str, ...], torch.Tensor]:
        """One fusion pass per combination of the modalities in `segments`: its L2-normalised embedding."""
        return {
            combination: self._fuse(
                [part for m in MODALITIES if m in combination for part in segments[m]]
            ).pooler_output
            for combination in check_combinations(combinations, list(segments))
        }

    # --------------------------------------------------------------------------------------------------- forward
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        transcript_input_ids: torch.Tensor | None = None,
        transcript_attention_mask: torch.Tensor | None = None,
        group_ids: torch.Tensor | None = None,
        fuse: bool = False,
        combinations: list[tuple[str, ...]] | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> CmanOutput:
        r"""
        transcript_input_ids / transcript_attention_mask (`torch.LongTensor` of shape `(batch_size, length)`):
            Text-tower tokens of what is said in each clip, for a model with a speech recogniser; without them the
            model transcribes the clips itself (see [`transcribe`]).
        group_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Rows with the same id describe the same thing (e.g. a duplicated caption); the loss never uses them as
            negatives of each other.
        fuse (`bool`, defaults to `False`):
            Also embed all the modalities passed together (`fused_embeds`), e.g. text + audio -> image queries.
        combinations (`list[tuple[str, ...]]`, *optional*):
            Also embed these combinations of the modalities passed (`combined_embeds`, keyed `"text+audio"`), in the
            same pass of the towers.
        return_loss (`bool`, *optional*):
            Compute the loss of `config.loss_type` over every pair of modalities passed (needs two or more, with the
            same batch size).
        output_attentions / output_hidden_states (`bool`, *optional*):
            Return the fusion transformer's attention probabilities / hidden states in each `*_model_output`.
        return_dict (`bool`, *optional*): `False` returns a tuple.
        """
        check_unknown_kwargs("CmanModel.forward", kwargs)
        flags = self._output_flags(output_attentions, output_hidden_states)
        segments = self._segments(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            input_features=input_features,
            input_values=input_values,
            audio_attention_mask=audio_attention_mask,
            pixel_values=pixel_values,
            transcript_input_ids=transcript_input_ids,
            transcript_attention_mask=transcript_attention_mask,
        )
        passes = {modality: self._fuse(parts, *flags) for modality, parts in segments.items()}
        embeds = {modality: output.pooler_output for modality, output in passes.items()}
        fused = None
        if fuse:
            if len(segments) < 2:
                raise ValueError("`fuse=True` needs two or more modalities in the same call.")
            fused = self._fuse([part for m in MODALITIES if m in segments for part in segments[m]], *flags)
        combined = None
        if combinations:
            combined = {combination_key(c): e for c, e in self._compose(segments, combinations).items()}
        loss = None
        if return_loss:
            if len(embeds) < 2:
                raise ValueError("`return_loss=True` needs two or more modalities to contrast.")
            loss = self.retrieval_loss()(embeds, self.inverse_temperature(), None, group_ids)
        return CmanOutput(
            loss=loss,
            **similarity_logits(embeds, self.inverse_temperature()),
            **{f"{modality}_embeds": embedding for modality, embedding in embeds.items()},
            **{f"{modality}_model_output": output for modality, output in passes.items()},
            fused_embeds=None if fused is None else fused.pooler_output,
            fused_model_output=fused,
            combined_embeds=combined,
        )

    # ---------------------------------------------------------------------------------------------------- helpers
    def inverse_temperature(self) -> torch.Tensor:
        """The scale of the similarity logits, `exp(logit_scale)`, clamped at 100 as CLIP's."""
        return self.logit_scale.exp().clamp(max=100.0)

    def _output_flags(self, output_attentions, output_hidden_states) -> tuple[bool, bool]:
        return (
            self.config.output_attentions if output_attentions is None else output_attentions,
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states,
        )

    @staticmethod
    def _is_input(name: str) -> bool:
        return any(name in names for names in MODALITY_INPUTS.values())


__all__ = ["CmanModel", "CmanOutput", "CmanPreTrainedModel"]
