# Copied from modeling.common.layers: edit modeling/common/layers.py, then run `make fix-copies`.
"""The fusion transformer: a pre-norm transformer encoder over the tokens of one or several modalities, with the
layer choices of seeds/004 (norms, feed-forward blocks, position encodings) looked up in small registries."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

FUSION_ACTIVATIONS = ("gelu", "relu", "silu")
FUSION_POOLINGS = ("cls", "mean")


@strict
class FusionTransformerConfig(PreTrainedConfig):
    r"""
    Configuration of a [`FusionTransformer`]: a pre-norm transformer encoder over the concatenated tokens of one or
    several modalities. Each token carries a learned type embedding (its modality) and a position counted within its
    segment; a learned pooling token is prepended.

    Args:
        hidden_size (`int`, defaults to 512): width of the transformer.
        num_hidden_layers (`int`, defaults to 6), num_attention_heads (`int`, defaults to 8),
        intermediate_size (`int`, defaults to 2048): depth, heads and feed-forward width.
        dropout (`float`, defaults to 0.3): dropout on the residual branches, the inputs and inside the feed-forward.
        attention_dropout (`float`, defaults to 0.0): dropout on the attention probabilities.
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation (`gelu`, `relu`, `silu`).
        norm (`str`, defaults to `"layernorm"`): a key of `NORMS` (`layernorm`, `rmsnorm`, `scalenorm`).
        ffn (`str`, defaults to `"standard"`): a key of `FEED_FORWARDS` (`standard`, `glu`, `swiglu`).
        position_embedding (`str`, defaults to `"learned"`): a key of `POSITION_ENCODINGS` (`learned`,
            `sinusoidal`, `rotary`); positions count from 0 within each segment.
        max_position_embeddings (`int`, defaults to 2048): the longest segment.
        pooling (`str`, defaults to `"cls"`): pool with the learned pooling token (`cls`) or a masked `mean`.
        layer_norm_eps (`float`, defaults to 1e-6), rope_theta (`float`, defaults to 10000.0).
        initializer_range (`float`, defaults to 0.02): std of the normal initialiser.
    """

    model_type = "fusion_transformer"

    hidden_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    dropout: float = 0.3
    attention_dropout: float = 0.0
    hidden_act: str = "gelu"
    norm: str = "layernorm"
    ffn: str = "standard"
    position_embedding: str = "learned"
    max_position_embeddings: int = 2048
    pooling: str = "cls"
    layer_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        name = type(self).__name__
        for field, allowed in (
            ("norm", NORMS),
            ("ffn", FEED_FORWARDS),
            ("position_embedding", POSITION_ENCODINGS),
            ("pooling", FUSION_POOLINGS),
            ("hidden_act", FUSION_ACTIVATIONS),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(
                    f"{name}.{field}={getattr(self, field)!r} is not supported; choose one of {tuple(allowed)}."
                )
        for field in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field} must be a positive integer, got {getattr(self, field)}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"{name}.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.position_embedding == "rotary" and self.head_dim % 2:
            raise ValueError(
                f"{name}.position_embedding='rotary' needs an even head size, got {self.head_dim} "
                "(hidden_size / num_attention_heads)."
            )
        for field in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"{name}.{field} must be in [0, 1), got {getattr(self, field)}.")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# ----------------------------------------------------------------------------------------------------------- norms
class RMSNorm(nn.Module):
    """Root-mean-square norm (no mean subtraction, no bias)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        hidden_states = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * hidden_states.to(dtype)


class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar, 2019): `g * x / ||x||` with one learned scalar `g`, initialised to sqrt(d)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.hidden_size = hidden_size
        self.scale = nn.Parameter(torch.tensor(math.sqrt(hidden_size)))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        norm = hidden_states.float().norm(dim=-1, keepdim=True).clamp(min=self.eps)
        return (self.scale * hidden_states.float() / norm).to(hidden_states.dtype)


#: Normalisation layers by `FusionTransformerConfig.norm`; each is built as `cls(hidden_size, eps=...)`.
NORMS: dict[str, type[nn.Module]] = {"layernorm": nn.LayerNorm, "rmsnorm": RMSNorm, "scalenorm": ScaleNorm}


def build_norm(config: FusionTransformerConfig) -> nn.Module:
    return NORMS[config.norm](config.hidden_size, eps=config.layer_norm_eps)


# ---------------------------------------------------------------------------------------------------- feed-forward
class FeedForward(nn.Module):
    """Position-wise feed-forward block: `fc2(dropout(act(fc1(x))))`."""

    def __init__(self, config: FusionTransformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(hidden_states))))


class GatedFeedForward(nn.Module):
    """Gated linear unit feed-forward (Shazeer, 2020): `fc2(dropout(value * gate_fn(gate)))`, where `fc1` gives
    value and gate; the gate function is a sigmoid (GLU) or SiLU (SwiGLU)."""

    gate_fn: Callable[[torch.Tensor], torch.Tensor] = staticmethod(torch.sigmoid)

    def __init__(self, config: FusionTransformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, 2 * config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        value, gate = self.fc1(hidden_states).chunk(2, dim=-1)
        return self.fc2(self.dropout(value * self.gate_fn(gate)))


class SwiGLUFeedForward(GatedFeedForward):
    gate_fn = staticmethod(F.silu)


#: Feed-forward blocks by `FusionTransformerConfig.ffn`; each is built as `cls(config)`.
FEED_FORWARDS: dict[str, type[nn.Module]] = {
    "standard": FeedForward,
    "glu": GatedFeedForward,
    "swiglu": SwiGLUFeedForward,
}


# ----------------------------------------------------------------------------------------------------------- positions
def sinusoidal_table(position_ids: torch.Tensor, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Fixed sine/cosine position encodings `(..., dim)` for integer `position_ids` (Vaswani et al.)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, dim, 2, device=position_ids.device, dtype=torch.float32) / dim)
    )
    angles = position_ids.float()[..., None] * inv_freq
    table = torch.zeros(*position_ids.shape, dim, device=position_ids.device)
    table[..., 0::2] = torch.sin(angles)
    table[..., 1::2] = torch.cos(angles[..., : dim // 2])
    return table


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LearnedPositions(nn.Module):
    """A learned table added to the tokens."""

    def __init__(self, config: FusionTransformerConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, hidden_states, position_ids):
        return hidden_states + self.embeddings(position_ids)[None].to(hidden_states.dtype), None


class SinusoidalPositions(nn.Module):
    """Fixed sinusoids added to the tokens."""

    def __init__(self, config: FusionTransformerConfig):
        super().__init__()
        self.dim, self.theta = config.hidden_size, config.rope_theta

    def forward(self, hidden_states, position_ids):
        table = sinusoidal_table(position_ids, self.dim, self.theta)
        return hidden_states + table[None].to(hidden_states.dtype), None


class RotaryPositions(nn.Module):
    """Rotary embeddings (Su et al.): the tokens are unchanged; queries and keys are rotated in attention."""

    def __init__(self, config: FusionTransformerConfig):
        super().__init__()
        self.head_dim, self.theta = config.head_dim, config.rope_theta

    def forward(self, hidden_states, position_ids):
        inv_freq = 1.0 / (
            self.theta
            ** (torch.arange(0, self.head_dim, 2, device=position_ids.device).float() / self.head_dim)
        )
        freqs = position_ids.float()[:, None] * inv_freq[None, :]  # (S, head_dim / 2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (S, head_dim)
        return hidden_states, (emb.cos(), emb.sin())


#: Position encodings by `FusionTransformerConfig.position_embedding`; each is built as `cls(config)` and returns
#: `(hidden_states, rotary)`, `rotary` being the `(cos, sin)` pair that attention applies, or None.
POSITION_ENCODINGS: dict[str, type[nn.Module]] = {
    "learned": LearnedPositions,
    "sinusoidal": SinusoidalPositions,
    "rotary": RotaryPositions,
}


# ----------------------------------------------------------------------------------------------------------- attention
def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention; `attention_mask` is boolean `(batch, 1, 1, kv_len)`, True where a key may be attended."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights.masked_fill(~attention_mask, torch.finfo(attn_weights.dtype).min)
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class FusionAttention(nn.Module):
    """Multi-head attention, dispatched through transformers' `AttentionInterface` (`eager`, `sdpa`, ...) by
    `config._attn_implementation`, which `model.set_attn_implementation(...)` sets. Self-attention by default; with
    `key_value_states` (another sequence) it is cross-attention, the mask then covering that sequence's keys."""

    def __init__(self, config: FusionTransformerConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_attentions: bool = False,
        key_value_states: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_len, _ = hidden_states.shape
        shape = (batch_size, seq_len, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)  # (B, heads, S, head_dim)
        if key_value_states is None:
            key_value_states = hidden_states
        elif rotary is not None:
            raise ValueError("Rotary positions apply to self-attention only (the two sequences count apart).")
        kv_shape = (batch_size, key_value_states.shape[1], self.num_heads, self.head_dim)
        key = self.k_proj(key_value_states).view(kv_shape).transpose(1, 2)
        value = self.v_proj(key_value_states).view(kv_shape).transpose(1, 2)
        if rotary is not None:
            cos, sin = (t.to(query.dtype) for t in rotary)
            query = query * cos + rotate_half(query) * sin
            key = key * cos + rotate_half(key) * sin

        implementation = self.config._attn_implementation
        if output_attentions:  # only the eager kernel materialises the attention probabilities
            implementation = "eager"
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.config.attention_dropout if self.training else 0.0,
            is_causal=False,
        )
        attn_output = self.o_proj(attn_output.reshape(batch_size, seq_len, -1))
        return attn_output, attn_weights


class FusionLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: `x + attn(norm(x))`, then `x + ffn(norm(x))`."""

    def __init__(self, config: FusionTransformerConfig):
        super().__init__()
        self.attention_norm = build_norm(config)
        self.attention = FusionAttention(config)
        self.ffn_norm = build_norm(config)
        self.ffn = FEED_FORWARDS[config.ffn](config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attention(
            self.attention_norm(hidden_states), attention_mask, rotary, output_attentions
        )
        hidden_states = hidden_states + self.dropout(attn_output)
        hidden_states = hidden_states + self.dropout(self.ffn(self.ffn_norm(hidden_states)))
        return hidden_states, attn_weights


@dataclass
class FusionSegment:
    """The tokens one modality contributes to a fused sequence: `tokens` `(batch, length, hidden)`, `mask`
    `(batch, length)` (True for real tokens) and the `type_id` every token carries. `pooled` `(batch, dim)`, when a
    family sets it, is the segment's own summary (e.g. its projected mean), which the family adds to the fused
    embedding: a late-fusion path beside the fusion transformer."""

    type_id: int
    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor | None = None


@dataclass
class FusionOutput(BaseModelOutputWithPooling):
    r"""
    A fusion pass: `last_hidden_state` `(batch, seq_len, hidden)`, `pooler_output` `(batch, hidden)` (the pooling
    token or the masked mean), `hidden_states` / `attentions` per layer when asked for.

    token_type_ids (`torch.LongTensor` of shape `(seq_len,)`):
        The type id of every token of the sequence (the pooling token first).
    """

    token_type_ids: torch.LongTensor | None = None


class FusionTransformer(PreTrainedModel):
    """
    Runs [`FusionLayer`]s over the segments of whichever modalities are given: adds each token's type embedding (one
    of `num_token_types`, which the family defines) and its position within its segment, prepends a learned pooling
    token (type `pooling_type_id`), and pools.

    A sub-model of the families (a `PreTrainedModel` with its own [`FusionTransformerConfig`], as CLIP's towers
    are), so `model.set_attn_implementation(...)` reaches its attention layers.
    """

    config: FusionTransformerConfig
    config_class = FusionTransformerConfig
    base_model_prefix = "fusion_encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["FusionLayer"]

    def __init__(self, config: FusionTransformerConfig, num_token_types: int = 1, pooling_type_id: int = 0):
        super().__init__(config)
        if not 0 <= pooling_type_id < num_token_types:
            raise ValueError(
                f"pooling_type_id={pooling_type_id} is not one of the {num_token_types} token types."
            )
        self.pooling_type_id = pooling_type_id
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.token_type_embeddings = nn.Embedding(num_token_types, config.hidden_size)
        self.positions = POSITION_ENCODINGS[config.position_embedding](config)
        self.input_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([FusionLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_norm = build_norm(config)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, ScaleNorm):
            init.constant_(module.scale, math.sqrt(module.hidden_size))
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, FusionTransformer):
            init.normal_(module.cls_token, mean=0.0, std=self.config.initializer_range)

    def forward(
        self,
        segments: Sequence[FusionSegment],
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> FusionOutput:
        batch_size = segments[0].tokens.shape[0]
        device = segments[0].tokens.device
        pieces = [self.cls_token.expand(batch_size, -1, -1)]
        masks = [torch.ones(batch_size, 1, dtype=torch.bool, device=device)]
        type_ids = [torch.full((1,), self.pooling_type_id, device=device)]
        position_ids = [torch.zeros(1, dtype=torch.long, device=device)]
        for segment in segments:
            length = segment.tokens.shape[1]
            if length > self.config.max_position_embeddings:
                raise ValueError(
                    f"A segment of type {segment.type_id} has {length} tokens but the fusion transformer's "
                    f"max_position_embeddings is {self.config.max_position_embeddings}; raise it in the config or "
                    "shorten the input."
                )
            pieces.append(segment.tokens)
            masks.append(segment.mask)
            type_ids.append(torch.full((length,), segment.type_id, device=device))
            position_ids.append(torch.arange(length, device=device))
        hidden_states = torch.cat(pieces, dim=1)  # (B, S, hidden)
        mask = torch.cat(masks, dim=1)  # (B, S)
        type_ids = torch.cat(type_ids)  # (S,)
        position_ids = torch.cat(position_ids)  # (S,)

        hidden_states = hidden_states + self.token_type_embeddings(type_ids)[None].to(hidden_states.dtype)
        hidden_states, rotary = self.positions(hidden_states, position_ids)
        hidden_states = self.input_dropout(hidden_states)

        attention_mask = mask[:, None, None, :]  # (B, 1, 1, S), True = attend
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, attention_mask, rotary, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        hidden_states = self.final_norm(hidden_states)

        if self.config.pooling == "cls":
            pooled = hidden_states[:, 0]
        else:
            weights = mask.to(hidden_states.dtype)[..., None]
            pooled = (hidden_states * weights).sum(1) / weights.sum(1)
        return FusionOutput(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            token_type_ids=type_ids,
        )
