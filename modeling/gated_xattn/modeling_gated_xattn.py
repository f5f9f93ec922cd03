"""PyTorch gated cross-attention generator (Flamingo-style): a frozen pretrained causal language model reads an image
or a sound through a perceiver resampler and tanh-gated cross-attention blocks inserted before some of its layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_gated_xattn import GatedXAttnConfig
from .layers import FEED_FORWARDS, FusionAttention, FusionTransformerConfig, build_norm
from .retrieval import StrictLoadingMixin, check_unknown_kwargs, format_parameter_table, parameter_counts
from .towers import (
    TowersMixin,
    audio_tokens,
    build_tower,
    image_tokens,
    load_pretrained_tower_state,
    tower_hidden_size,
)

#: Components of the parameter table, by top-level attribute of [`GatedXAttnModel`].
PARAMETER_GROUPS = {
    "audio_model": "audio tower",
    "image_model": "image tower",
    "audio_projection": "projections",
    "image_projection": "projections",
    "resampler": "perceiver resampler",
    "gated_cross_attention": "gated cross-attention",
    "language_model": "text decoder",
}
#: Every saved folder can be loaded by each of these auto classes.
AUTO_CLASSES = {
    "AutoModel": "GatedXAttnModel",
    "AutoModelForImageTextToText": "GatedXAttnForConditionalGeneration",
}
#: The decoder's attention projections LoRA adapts, by `model_type` (query and value, as the towers').
DECODER_LORA_TARGETS = {
    "gpt2": ("c_attn",),
    "gpt_neo": ("q_proj", "v_proj"),
    "opt": ("q_proj", "v_proj"),
}
DEFAULT_DECODER_LORA_TARGETS = ("q_proj", "v_proj")  # Llama, Mistral, Qwen2, Gemma, SmolLM, Phi-3 ...
MEDIA_INPUTS = ("pixel_values", "input_features", "input_values", "audio_attention_mask", "media_latents")
#: The keyword argument that carries a call's media through the decoder to the gated blocks' hooks.
MEDIA_KWARG = "gated_xattn_media"


@dataclass
class MediaForLayers:
    """What one call hands the gated blocks: the latents, and a list collecting their attentions when asked."""

    latents: torch.Tensor
    attentions: list[torch.Tensor] | None = None
    blocks_run: int = 0


@dataclass
class GatedXAttnModelOutputWithPast(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`): the decoder's
            final states.
        cache (`Cache`, *optional*): the decoder's key/value cache (`use_cache=True`).
        hidden_states / attentions (`tuple(torch.FloatTensor)`, *optional*): the decoder's, when asked for.
        media_latents (`torch.FloatTensor` of shape `(batch_size, num_latents, hidden_size)`, *optional*): the
            resampler's output the gated blocks attended to (generation passes it back instead of the pixels).
        cross_attentions (`tuple(torch.FloatTensor)`, *optional*): each gated block's attention over the latents,
            `(batch_size, heads, sequence_length, num_latents)`, with `output_attentions=True`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    media_latents: torch.FloatTensor | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class GatedXAttnCausalLMOutputWithPast(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `(1,)`, *optional*): next-token cross-entropy over the `labels` that are
            not -100 (the answer or caption tokens).
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`): next-token scores.
        cache, hidden_states, attentions, media_latents, cross_attentions: as [`GatedXAttnModelOutputWithPast`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    media_latents: torch.FloatTensor | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


# ------------------------------------------------------------------------------------------------------- layers
class PerceiverResamplerLayer(GradientCheckpointingLayer):
    """Flamingo's resampler block: the latents attend to the media tokens and to themselves (keys and values are the
    two concatenated), then a feed-forward block; both residual."""

    def __init__(self, config: FusionTransformerConfig):
        super().__init__()
        self.media_norm = build_norm(config)
        self.latent_norm = build_norm(config)
        self.attention = FusionAttention(config)
        self.ffn_norm = build_norm(config)
        self.ffn = FEED_FORWARDS[config.ffn](config)

    def forward(
        self, latents: torch.Tensor, media: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        queries = self.latent_norm(latents)
        keys_values = torch.cat([self.media_norm(media), queries], dim=1)
        attention, _ = self.attention(queries, attention_mask, key_value_states=keys_values)
        latents = latents + attention
        return latents + self.ffn(self.ffn_norm(latents))


class PerceiverResampler(nn.Module):
    """A fixed number of learned latents read the media tokens (any number, masked) through a few
    [`PerceiverResamplerLayer`]s: the decoder always sees `num_latents` vectors per image or clip."""

    def __init__(self, config: FusionTransformerConfig, num_latents: int):
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(num_latents, config.hidden_size))
        self.layers = nn.ModuleList(PerceiverResamplerLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = build_norm(config)

    def forward(self, media: torch.Tensor, media_mask: torch.Tensor) -> torch.Tensor:
        batch_size = media.shape[0]
        latents = self.latents.to(media.dtype).expand(batch_size, -1, -1)
        own = torch.ones(latents.shape[:2], dtype=torch.bool, device=media.device)
        mask = torch.cat([media_mask.bool(), own], dim=1)[:, None, None, :]  # (B, 1, 1, T + L)
        for layer in self.layers:
            latents = layer(latents, media, mask)
        return self.norm(latents)


class GatedXAttnBlock(nn.Module):
    """Flamingo's gated xattn-dense block: `x + tanh(a) * xattn(norm(x), latents)`, then
    `x + tanh(b) * ffn(norm(x))`. `a` and `b` start at 0, so a new block leaves the decoder's states unchanged."""

    def __init__(self, config: FusionTransformerConfig):
        super().__init__()
        self.attention_norm = build_norm(config)
        self.attention = FusionAttention(config)
        self.attention_gate = nn.Parameter(torch.zeros(1))
        self.ffn_norm = build_norm(config)
        self.ffn = FEED_FORWARDS[config.ffn](config)
        self.ffn_gate = nn.Parameter(torch.zeros(1))
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, hidden_states: torch.Tensor, media_latents: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention, weights = self.attention(
            self.attention_norm(hidden_states),
            None,
            output_attentions=output_attentions,
            key_value_states=media_latents.to(hidden_states.dtype),
        )
        hidden_states = hidden_states + torch.tanh(self.attention_gate).to(attention.dtype) * self.dropout(
            attention
        )
        feed_forward = self.ffn(self.ffn_norm(hidden_states))
        hidden_states = hidden_states + torch.tanh(self.ffn_gate).to(feed_forward.dtype) * self.dropout(
            feed_forward
        )
        return hidden_states, weights


class GatedXAttnLayers(nn.Module):
    """The gated blocks, one per decoder layer of `config.cross_attention_layers` (keyed by that index)."""

    def __init__(self, config: FusionTransformerConfig, layer_indices: list[int]):
        super().__init__()
        self.blocks = nn.ModuleDict({str(index): GatedXAttnBlock(config) for index in layer_indices})

    def forward(
        self,
        layer_index: int,
        hidden_states: torch.Tensor,
        media_latents: torch.Tensor,
        output_attentions=False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.blocks[str(layer_index)](hidden_states, media_latents, output_attentions)


def decoder_layers(language_model: nn.Module, num_hidden_layers: int) -> nn.ModuleList:
    """The decoder's list of layers (`layers` for Llama-like models, `h` for GPT-2, ...): the first `ModuleList` of
    `num_hidden_layers` modules."""
    for module in language_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_hidden_layers:
            return module
    raise ValueError(
        f"Cannot find the {num_hidden_layers} decoder layers of {type(language_model).__name__}: the gated "
        "cross-attention blocks are inserted before them."
    )


# -------------------------------------------------------------------------------------------------------- models
class GatedXAttnPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    config: GatedXAttnConfig
    config_class = GatedXAttnConfig
    base_model_prefix = "model"
    input_modalities = ("text", "audio", "image")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["GatedXAttnBlock", "PerceiverResamplerLayer"]
    _can_compile_fullgraph = False
    #: `{auto class: model class name}` written into every saved folder's `auto_map` (the base model and the generator).
    auto_classes = AUTO_CLASSES

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:  # any saved folder loads into the model and the generator
            module = type(self).__module__.split(".")[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                **{auto: f"{module}.{name}" for auto, name in self.auto_classes.items()},
            }
        super().save_pretrained(save_directory, *args, **kwargs)

    def parameter_table(self) -> str:
        """A Markdown table of total / trainable / LoRA parameters per component of the base model."""
        base = self.model if isinstance(self, GatedXAttnForConditionalGeneration) else self
        return format_parameter_table(parameter_counts(base, PARAMETER_GROUPS))

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, PerceiverResampler):
            init.normal_(module.latents, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, GatedXAttnBlock):
            init.zeros_(module.attention_gate)  # tanh(0) = 0: the untrained model is the pretrained decoder
            init.zeros_(module.ffn_gate)

    @classmethod
    def from_encoders_pretrained(cls, config: GatedXAttnConfig, **from_pretrained_kwargs):
        """Build the model from `config` and load the pretrained weights named by `text_model_name_or_path` (a causal
        LM: its decoder, and its output layer unless tied), `image_model_name_or_path` and
        `audio_model_name_or_path`; the resampler and the gated blocks start from their initialisation."""
        model = cls(config)
        base = model.model if isinstance(model, GatedXAttnForConditionalGeneration) else model
        for modality, tower in base.towers().items():
            name = getattr(config, f"{modality}_model_name_or_path")
            if name:
                load_pretrained_tower_state(tower, name, modality, **from_pretrained_kwargs)
        if config.text_model_name_or_path:
            causal_lm = AutoModelForCausalLM.from_pretrained(
                config.text_model_name_or_path, **from_pretrained_kwargs
            )
            base.language_model.load_state_dict(causal_lm.base_model.state_dict(), strict=True)
            if isinstance(model, GatedXAttnForConditionalGeneration) and not config.tie_word_embeddings:
                model.lm_head.load_state_dict(causal_lm.get_output_embeddings().state_dict(), strict=True)
            if causal_lm.generation_config is not None:
                model.generation_config = causal_lm.generation_config
            model.tie_weights()
        return model


class GatedXAttnModel(TowersMixin, GatedXAttnPreTrainedModel):
    """
    The image (or audio) tower, the perceiver resampler and the decoder (without its language-modelling head) with
    gated cross-attention blocks before every `config.cross_attention_every`-th layer. Pass `input_ids` /
    `attention_mask` and one image (`pixel_values`) or clip (`input_features` / `input_values`) per row, or neither
    (the plain decoder). Returns the decoder's states and the resampled `media_latents`.
    """

    tower_attributes = {"audio": "audio_model", "image": "image_model"}

    def __init__(self, config: GatedXAttnConfig):
        super().__init__(config)
        for block_config in (config.resampler_config, config.cross_attention_config):
            if block_config._attn_implementation is None:  # plain modules: they read the model's choice
                block_config._attn_implementation = config._attn_implementation
        self.audio_model = build_tower(config.audio_config)
        self.image_model = build_tower(config.image_config)
        width = config.text_config.hidden_size
        self.audio_projection = nn.Linear(tower_hidden_size(self.audio_model), width)
        self.image_projection = nn.Linear(tower_hidden_size(self.image_model), width)
        self.resampler = PerceiverResampler(config.resampler_config, config.num_latents)
        self.gated_cross_attention = GatedXAttnLayers(
            config.cross_attention_config, config.cross_attention_layers
        )
        self.language_model = AutoModel.from_config(config.text_config)
        # The blocks run as forward pre-hooks of the decoder's own layers: the decoder's modules keep their names
        # (so pretrained weights and LoRA targets are the checkpoint's) and any causal LM's layer loop drives them.
        # The media reach the hooks as a keyword argument of the call (`MEDIA_KWARG`), which transformers' decoders
        # hand on to every layer: nothing of a call is kept on the model, so calls on several threads do not mix.
        layers = decoder_layers(self.language_model, config.text_config.num_hidden_layers)
        for index in config.cross_attention_layers:
            layers[index].register_forward_pre_hook(self._cross_attention_hook(index), with_kwargs=True)
        self.post_init()
        if config.freeze_encoders:
            for tower in self.towers().values():
                tower.requires_grad_(False)
        if config.freeze_text_model:
            self.language_model.requires_grad_(False)

    def _cross_attention_hook(self, index: int):
        def hook(module, args, kwargs):
            media = kwargs.pop(MEDIA_KWARG, None)
            if media is None:
                return args, kwargs
            if args:
                hidden_states, args = args[0], args[1:]
            else:
                hidden_states = kwargs.pop("hidden_states")
            hidden_states, weights = self.gated_cross_attention(
                index, hidden_states, media.latents, media.attentions is not None
            )
            media.blocks_run += 1
            if media.attentions is not None:
                media.attentions.append(weights)
            return (hidden_states, *args), kwargs

        return hook

    def trainable_modules(self) -> list[str]:
        modules = ["audio_projection", "image_projection", "resampler", "gated_cross_attention"]
        return modules if self.config.freeze_text_model else [*modules, "language_model"]

    def lora_target_modules(self) -> list[str]:
        """The decoder's attention query/value projections (see `DECODER_LORA_TARGETS`)."""
        suffixes = DECODER_LORA_TARGETS.get(self.config.text_config.model_type, DEFAULT_DECODER_LORA_TARGETS)
        prefix = self.language_model_prefix()
        return [
            f"{prefix}{name}"
            for name, module in self.language_model.named_modules()
            if name.rsplit(".", 1)[-1] in suffixes and hasattr(module, "weight")
        ]

    def language_model_prefix(self) -> str:
        return "language_model."

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    # --------------------------------------------------------------------------------------------------- media
    def get_media_latents(
        self,
        pixel_values: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The resampled latents `(batch, num_latents, hidden)` of one image or clip per row (`None` without media)."""
        has_audio = input_features is not None or input_values is not None
        if pixel_values is not None and has_audio:
            raise ValueError(
                f"{type(self).__name__} reads one image or one audio clip per row, not both; pass `pixel_values` or "
                "the audio inputs."
            )
        if pixel_values is not None:
            tokens = image_tokens(
                self.image_model,
                pixel_values.to(self.image_projection.weight.dtype),
                self.frozen_prefix_cache,
            )
            media = self.image_projection(tokens.hidden)
        elif has_audio:
            tokens = audio_tokens(
                self.audio_model,
                input_features,
                input_values,
                audio_attention_mask,
                cache=self.frozen_prefix_cache,
            )
            media = self.audio_projection(tokens.hidden)
        else:
            return None
        return self.resampler(media, tokens.mask)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        input_values: torch.FloatTensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        media_latents: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> GatedXAttnModelOutputWithPast | tuple:
        r"""
        media_latents (`torch.FloatTensor` of shape `(batch_size, num_latents, hidden_size)`, *optional*):
            Latents of an earlier call (generation reuses them instead of re-reading the pixels at every step).
        """
        check_unknown_kwargs(type(self).__name__, kwargs, self.known_inputs())
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_attentions = (
            output_attentions if output_attentions is not None else self.config.output_attentions
        )
        if media_latents is None:
            media_latents = self.get_media_latents(
                pixel_values, input_features, input_values, audio_attention_mask
            )
        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
            # Left padding (as the processor pads for generation) must not shift the positions of a row.
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
        media = None
        if media_latents is not None:
            media = MediaForLayers(media_latents, [] if output_attentions else None)
        outputs = self.language_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **({MEDIA_KWARG: media} if media is not None else {}),
        )
        cross_attentions = None
        if media is not None:
            if media.blocks_run != len(self.config.cross_attention_layers):
                raise RuntimeError(
                    f"{type(self.language_model).__name__} ran {media.blocks_run} of the "
                    f"{len(self.config.cross_attention_layers)} gated blocks: its forward does not hand its keyword "
                    "arguments on to its layers, so the media cannot reach them. Use a decoder that does (Llama, "
                    "Mistral, Qwen2, GPT-2, ... in transformers 5)."
                )
            cross_attentions = tuple(media.attentions) if media.attentions is not None else None
        output = GatedXAttnModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.get("cache"),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            media_latents=media_latents,
            cross_attentions=cross_attentions,
        )
        return output if return_dict else output.to_tuple()

    @staticmethod
    def known_inputs() -> tuple[str, ...]:
        return ("input_ids", "attention_mask", "position_ids", "cache", "inputs_embeds", *MEDIA_INPUTS)


class GatedXAttnForConditionalGeneration(GatedXAttnPreTrainedModel, GenerationMixin):
    """
    [`GatedXAttnModel`] with the decoder's language-modelling head: captions an image or a sound and answers questions
    about it with `generate()` (the stock `image-text-to-text` pipeline drives it). With `labels` (the prompt and
    padding set to -100) it returns the next-token cross-entropy.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: GatedXAttnConfig):
        super().__init__(config)
        self.model = GatedXAttnModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            embeddings = self.model.language_model.get_input_embeddings()
            name = next(n for n, m in self.model.language_model.named_modules() if m is embeddings)
            self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{name}.weight"}
        self.post_init()
        if config.freeze_text_model:
            self.lm_head.requires_grad_(False)

    # The towers, LoRA and the table live in the base model; PEFT and the recipes call them here.
    def towers(self) -> dict[str, nn.Module]:
        return self.model.towers()

    @property
    def tower_attributes(self) -> dict[str, str]:
        return {modality: f"model.{name}" for modality, name in self.model.tower_attributes.items()}

    def enable_frozen_prefix_cache(self, cache) -> None:
        self.model.enable_frozen_prefix_cache(cache)

    def trainable_modules(self) -> list[str]:
        return [f"model.{name}" for name in self.model.trainable_modules()]

    def lora_target_modules(self) -> list[str]:
        return [f"model.{name}" for name in self.model.lora_target_modules()]

    lora_config = TowersMixin.lora_config
    apply_lora = TowersMixin.apply_lora

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_media_latents(self, *args, **kwargs) -> torch.Tensor | None:
        return self.model.get_media_latents(*args, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        input_values: torch.FloatTensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        media_latents: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> GatedXAttnCausalLMOutputWithPast | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            The tokens to predict (usually `input_ids` with the prompt and the padding set to -100); shifted inside.
        media_latents (`torch.FloatTensor`, *optional*): latents of an earlier call, instead of the media inputs.
        logits_to_keep (`int`, defaults to 0): compute the scores of only the last this many positions (0: all).
        """
        check_unknown_kwargs(
            type(self).__name__, kwargs, (*self.model.known_inputs(), "labels", "logits_to_keep")
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            input_features=input_features,
            input_values=input_values,
            audio_attention_mask=audio_attention_mask,
            media_latents=media_latents,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        if logits_to_keep:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size
            )
        output = GatedXAttnCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            media_latents=outputs.media_latents,
            cross_attentions=outputs.cross_attentions,
        )
        return output if return_dict else output.to_tuple()

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        """Keep the resampled latents: after the first step the pixels (or audio) are no longer passed, and every
        generated token still reads the image through the gated blocks."""
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        if getattr(outputs, "media_latents", None) is not None:
            model_kwargs["media_latents"] = outputs.media_latents
        return model_kwargs


__all__ = [
    "GatedXAttnForConditionalGeneration",
    "GatedXAttnModel",
    "GatedXAttnPreTrainedModel",
]
