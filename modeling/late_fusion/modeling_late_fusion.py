"""PyTorch late fusion (dual / tri-encoder, CLIP-, SigLIP- and CLAP-style): each modality's pretrained tower is pooled
and projected into one L2-normalised space; modalities meet only in the similarity of their embeddings."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.generic import can_return_tuple

from .configuration_late_fusion import LateFusionConfig
from .losses import LOSSES, ContrastiveLoss, build_loss
from .retrieval import (
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

#: Components of the parameter table, by top-level attribute.
PARAMETER_GROUPS = {
    "text_model": "text tower",
    "audio_model": "audio tower",
    "image_model": "image tower",
    "text_projection": "projections",
    "audio_projection": "projections",
    "image_projection": "projections",
    "speech_recognizer": "speech recogniser (frozen)",
    "logit_scale": "temperature and bias",
    "logit_bias": "temperature and bias",
}
#: Auto classes besides `AutoModel` that load this model, written into a saved folder's `auto_map`.
EXTRA_AUTO_CLASSES = ("AutoModelForZeroShotImageClassification",)


@dataclass
class LateFusionOutput(RetrievalOutput):
    r"""
    The [`RetrievalOutput`] of the late-fusion family: each `<modality>_model_output` is that modality's tower output
    (`last_hidden_state` its tokens, `pooler_output` the embedding, hidden states and attentions on request).
    """


class LateFusionPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    config: LateFusionConfig
    config_class = LateFusionConfig
    base_model_prefix = "late_fusion"
    input_modalities = ("text", "audio", "image")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _tied_weights_keys: dict[str, str] = {}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LateFusionModel):
            init.constant_(module.logit_scale, math.log(1.0 / self.config.temperature))
            if module.logit_bias is not None:
                init.constant_(module.logit_bias, self.config.logit_bias_init)


class LateFusionModel(TranscribingMixin, TowersMixin, LateFusionPreTrainedModel):
    """
    Late fusion over text, audio and images. Pass any subset of `input_ids`/`attention_mask` (text), `input_features`
    or `input_values` (audio) and `pixel_values` (images), with any batch size each: every modality is embedded on
    its own (masked mean of its tower's tokens, a linear projection, L2 norm), and `logits_per_*` compare them as
    CLIP's and CLAP's do, so the stock `zero-shot-image-classification` and `zero-shot-audio-classification`
    pipelines run on a saved folder. With `config.speech_recognizer_config` the audio embedding also holds the
    projected text-tower embedding of what a frozen Whisper hears.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: LateFusionConfig):
        super().__init__(config)
        self.text_model = build_tower(config.text_config)
        self.audio_model = build_tower(config.audio_config)
        self.image_model = build_tower(config.image_config)
        self.text_projection = nn.Linear(
            tower_hidden_size(self.text_model), config.projection_dim, bias=False
        )
        self.audio_projection = nn.Linear(
            tower_hidden_size(self.audio_model), config.projection_dim, bias=False
        )
        self.image_projection = nn.Linear(
            tower_hidden_size(self.image_model), config.projection_dim, bias=False
        )
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
        self.logit_bias = None
        if LOSSES[config.loss_type].uses_logit_bias:  # SigLIP's learned bias
            self.logit_bias = nn.Parameter(torch.tensor(config.logit_bias_init))
        self.post_init()
        if config.freeze_encoders:
            for tower in self.towers().values():
                tower.requires_grad_(False)

    def trainable_modules(self) -> list[str]:
        return ["text_projection", "audio_projection", "image_projection"]

    @classmethod
    def from_encoders_pretrained(cls, config: LateFusionConfig, **from_pretrained_kwargs) -> LateFusionModel:
        """Build the model from `config` and load the pretrained weights of every tower whose
        `<modality>_model_name_or_path` is set, and of the speech recogniser; the projections start from random
        weights. Use [`LateFusionConfig.from_towers`] to write such a config."""
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

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:  # also loadable through the auto classes the stock pipelines use
            reference = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                **dict.fromkeys(EXTRA_AUTO_CLASSES, reference),
            }
        super().save_pretrained(save_directory, *args, **kwargs)

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

    def inverse_temperature(self) -> torch.Tensor:
        """The scale of the similarity logits, `exp(logit_scale)`, clamped at 100 as CLIP's."""
        return self.logit_scale.exp().clamp(max=100.0)

    # --------------------------------------------------------------------------------------- retrieval interface
    def _tower_output(self, tokens, embedding: torch.Tensor) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(
            last_hidden_state=tokens.hidden,
            pooler_output=F.normalize(embedding, dim=-1),
            hidden_states=getattr(tokens.output, "hidden_states", None),
            attentions=getattr(tokens.output, "attentions", None),
        )

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """The text tower's output; `pooler_output` is the L2-normalised embedding `(batch_size, projection_dim)`."""
        tokens = text_tokens(
            self.text_model,
            input_ids,
            attention_mask,
            token_type_ids,
            self.frozen_prefix_cache,
            **self._output_kwargs(output_attentions, output_hidden_states),
        )
        return self._tower_output(tokens, self.text_projection(tokens.mean()))

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
    ) -> BaseModelOutputWithPooling:
        """The audio tower's output; `pooler_output` is the L2-normalised embedding `(batch_size, projection_dim)`: the
        projected mean of the audio tokens, plus, for a model that reads transcripts, the projected text-tower
        embedding of what is said (given, or transcribed here)."""
        tokens = audio_tokens(
            self.audio_model, input_features, input_values, audio_attention_mask, 1, self.frozen_prefix_cache,
            **self._output_kwargs(output_attentions, output_hidden_states),
        )  # fmt: skip
        embedding = self.audio_projection(tokens.mean())
        if self.speech_recognizer is not None:
            if transcript_input_ids is None:
                transcript_input_ids, transcript_attention_mask = self.transcript_inputs(input_features)
            transcript = text_tokens(
                self.text_model,
                transcript_input_ids,
                transcript_attention_mask,
                None,
                self.frozen_prefix_cache,
            )
            embedding = embedding + self.text_projection(transcript.mean())
        elif transcript_input_ids is not None:
            raise ValueError(
                "`transcript_input_ids` were passed, but this model does not read transcripts "
                "(config.speech_recognizer_config is None)."
            )
        return self._tower_output(tokens, embedding)

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """The image tower's output; `pooler_output` is the L2-normalised embedding `(batch_size, projection_dim)`."""
        tokens = image_tokens(
            self.image_model,
            pixel_values,
            self.frozen_prefix_cache,
            **self._output_kwargs(output_attentions, output_hidden_states),
        )
        return self._tower_output(tokens, self.image_projection(tokens.mean()))

    def _modality_outputs(self, inputs: dict, output_attentions=None, output_hidden_states=None) -> dict:
        outputs = {}
        modalities = present_modalities(inputs)
        flags = dict(output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        if "text" in modalities:
            outputs["text"] = self.get_text_features(
                inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids"), **flags
            )
        if "audio" in modalities:
            outputs["audio"] = self.get_audio_features(
                inputs.get("input_features"),
                inputs.get("input_values"),
                inputs.get("audio_attention_mask"),
                inputs.get("transcript_input_ids"),
                inputs.get("transcript_attention_mask"),
                **flags,
            )
        elif inputs.get("transcript_input_ids") is not None:
            raise ValueError("`transcript_input_ids` describe audio: pass the audio (`input_features`) too.")
        if "image" in modalities:
            outputs["image"] = self.get_image_features(inputs["pixel_values"], **flags)
        if not outputs:
            raise ValueError(
                "LateFusionModel needs at least one modality: input_ids (text), input_features/input_values (audio) or "
                "pixel_values (images)."
            )
        return outputs

    def encode(self, combinations: list[tuple[str, ...]], **inputs) -> dict[tuple[str, ...], torch.Tensor]:
        """
        Embed several modality combinations of the same batch, running each tower once. A combination of several
        modalities (a composed query, e.g. `("text", "audio")`) is the normalised sum of their embeddings, as late
        fusion composes.
        """
        inputs.pop("group_ids", None)  # a collator's batch carries them; they do not embed
        check_unknown_kwargs(
            "LateFusionModel.encode",
            {k: v for k, v in inputs.items() if not any(k in n for n in MODALITY_INPUTS.values())},
        )
        embeds = {m: output.pooler_output for m, output in self._modality_outputs(inputs).items()}
        return self._compose(embeds, combinations)

    @staticmethod
    def _compose(embeds: dict[str, torch.Tensor], combinations) -> dict[tuple[str, ...], torch.Tensor]:
        result = {}
        for combination in check_combinations(combinations, list(embeds)):
            if len(combination) == 1:
                result[combination] = embeds[combination[0]]
                continue
            sizes = {m: embeds[m].shape[0] for m in combination}
            if len(set(sizes.values())) > 1:
                raise ValueError(f"Composing modalities needs the same batch size for each, got {sizes}.")
            result[combination] = F.normalize(sum(embeds[m] for m in combination), dim=-1)
        return result

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
        combinations: list[tuple[str, ...]] | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> LateFusionOutput:
        r"""
        transcript_input_ids / transcript_attention_mask (`torch.LongTensor` of shape `(batch_size, length)`):
            Text-tower tokens of what is said in each clip, for a model with a speech recogniser; without them the
            model transcribes the clips itself (see [`transcribe`]).
        group_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Rows with the same id describe the same thing; the loss never uses them as negatives of each other.
        combinations (`list[tuple[str, ...]]`, *optional*):
            Also embed these combinations of the modalities passed (`combined_embeds`, keyed `"text+audio"`): the
            normalised sum of their embeddings.
        return_loss (`bool`, *optional*):
            Compute the loss of `config.loss_type` over every pair of modalities passed (the same batch size each).
        output_attentions / output_hidden_states (`bool`, *optional*):
            Return the towers' attention probabilities / hidden states in each `*_model_output`.
        return_dict (`bool`, *optional*): `False` returns a tuple.
        """
        check_unknown_kwargs("LateFusionModel.forward", kwargs)
        outputs = self._modality_outputs(
            dict(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                input_features=input_features,
                input_values=input_values,
                audio_attention_mask=audio_attention_mask,
                pixel_values=pixel_values,
                transcript_input_ids=transcript_input_ids,
                transcript_attention_mask=transcript_attention_mask,
            ),
            output_attentions,
            output_hidden_states,
        )
        embeds = {modality: output.pooler_output for modality, output in outputs.items()}
        loss = None
        if return_loss:
            if len(embeds) < 2:
                raise ValueError("`return_loss=True` needs two or more modalities to contrast.")
            loss = self.retrieval_loss()(embeds, self.inverse_temperature(), self.logit_bias, group_ids)
        return LateFusionOutput(
            loss=loss,
            **similarity_logits(embeds, self.inverse_temperature(), self.logit_bias),
            **{f"{modality}_embeds": embedding for modality, embedding in embeds.items()},
            **{f"{modality}_model_output": output for modality, output in outputs.items()},
            combined_embeds={combination_key(c): e for c, e in self._compose(embeds, combinations).items()}
            if combinations
            else None,
        )

    def _output_kwargs(self, output_attentions, output_hidden_states) -> dict:
        """The `output_*` flags a tower is asked for (only those that are on: timm towers take no attentions)."""
        flags = {
            "output_attentions": self.config.output_attentions
            if output_attentions is None
            else output_attentions,
            "output_hidden_states": self.config.output_hidden_states
            if output_hidden_states is None
            else output_hidden_states,
        }
        return {key: True for key, value in flags.items() if value}


__all__ = ["LateFusionModel", "LateFusionOutput", "LateFusionPreTrainedModel"]
