"""PyTorch CMAN (Cross-Modal Attention Network): pretrained text/audio/image towers, a unified fusion transformer
over the tokens of whichever modalities are present, and one L2-normalised embedding space."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

from .configuration_cman import CmanConfig

logger = logging.get_logger(__name__)

MODALITIES = ("text", "audio", "image")
# Type ids of the fusion tokens: one per modality, the pooling token, and the transcript of the audio (text-tower
# tokens of what the speech recogniser heard, part of the audio input).
MODALITY_TYPE_IDS = {"text": 0, "audio": 1, "image": 2, "cls": 3, "transcript": 4}
# Tower attribute of each modality (the image tower is named after its config, `vision_config`).
TOWER_ATTRIBUTES = {"text": "text_model", "audio": "audio_model", "image": "vision_model"}
# Attention projections LoRA adapts in each supported tower (depthwise convolutions cannot take LoRA).
LORA_TARGETS = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "camembert": ("query", "value"),
    "electra": ("query", "value"),
    "deberta-v2": ("query_proj", "value_proj"),
    "distilbert": ("q_lin", "v_lin"),
    "audio-spectrogram-transformer": ("query", "value", "q_proj", "v_proj"),
    "whisper": ("q_proj", "v_proj"),
    "vit": ("query", "value", "q_proj", "v_proj"),
    "deit": ("query", "value", "q_proj", "v_proj"),
    "timm_wrapper": ("conv_pw", "conv_pwl", "conv_head"),
}


@dataclass
class CmanOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        Retrieval loss (max-margin or InfoNCE) summed over every pair of modalities present.
    text_embeds / audio_embeds / image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
        L2-normalised embedding of each modality on its own.
    fused_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
        L2-normalised embedding of all the modalities passed, fused in one sequence (with `fuse=True`).
    logits_text_audio / logits_text_image / logits_audio_image (`torch.FloatTensor` of shape `(batch_size, batch_size)`):
        Cosine similarities between the two modalities (rows: the first one).
    fusion_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        Per fusion layer, the attention probabilities `(batch_size, num_heads, seq_len, seq_len)` of the fused
        sequence (or of the single modality when only one is passed).
    fusion_token_type_ids (`torch.LongTensor` of shape `(seq_len,)`, *optional*):
        Modality of each token of that sequence (0 text, 1 audio, 2 image, 3 pooling token).
    """

    loss: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    fused_embeds: torch.FloatTensor | None = None
    logits_text_audio: torch.FloatTensor | None = None
    logits_text_image: torch.FloatTensor | None = None
    logits_audio_image: torch.FloatTensor | None = None
    fusion_attentions: tuple[torch.FloatTensor, ...] | None = None
    fusion_token_type_ids: torch.LongTensor | None = None


# --------------------------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------------------------
def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather `tensor` (batch first) from every rank, keeping the gradient path to each rank's own slice."""
    gathered = torch.distributed.nn.functional.all_gather(tensor)
    return torch.cat(gathered, dim=0)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def max_margin_loss(
    scores: torch.Tensor, margin: float, negatives: str = "hardest", positive_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """
    Bidirectional max-margin (triplet) loss of VSE++ on a `(N, N)` similarity matrix whose diagonal holds the
    matching pairs. `negatives="hardest"` keeps the hardest negative of each anchor in both directions; `"all"` sums
    the hinge over every negative. `positive_mask` marks other pairs that also match (e.g. duplicated captions);
    they are never used as negatives. Averaged over anchors, summed over the two directions.
    """
    positives = scores.diagonal()
    not_negative = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    if positive_mask is not None:
        not_negative = not_negative | positive_mask
    cost_rows = (margin + scores - positives[:, None]).clamp(min=0).masked_fill(not_negative, 0.0)
    cost_cols = (margin + scores - positives[None, :]).clamp(min=0).masked_fill(not_negative, 0.0)
    if negatives == "hardest":
        return cost_rows.max(dim=1).values.mean() + cost_cols.max(dim=0).values.mean()
    return cost_rows.sum(dim=1).mean() + cost_cols.sum(dim=0).mean()


def infonce_loss(
    scores: torch.Tensor, logit_scale: torch.Tensor, positive_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) loss on a `(N, N)` cosine matrix; other matching pairs are masked out."""
    logits = scores * logit_scale
    if positive_mask is not None:
        off_diagonal = positive_mask & ~torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
        logits = logits.masked_fill(off_diagonal, torch.finfo(logits.dtype).min)
    labels = torch.arange(scores.shape[0], device=scores.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


# --------------------------------------------------------------------------------------------------------------------
# Fusion transformer layers (seed 004 choices: norm, FFN and position variants)
# --------------------------------------------------------------------------------------------------------------------
class CmanRMSNorm(nn.Module):
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


class CmanScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar, 2019): `g * x / ||x||` with one learned scalar `g`, initialised to sqrt(d)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.hidden_size = hidden_size
        self.scale = nn.Parameter(torch.tensor(math.sqrt(hidden_size)))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        norm = hidden_states.float().norm(dim=-1, keepdim=True).clamp(min=self.eps)
        return (self.scale * hidden_states.float() / norm).to(hidden_states.dtype)


def build_norm(config: CmanConfig) -> nn.Module:
    if config.fusion_norm == "rmsnorm":
        return CmanRMSNorm(config.fusion_hidden_size, eps=config.fusion_layer_norm_eps)
    if config.fusion_norm == "scalenorm":
        return CmanScaleNorm(config.fusion_hidden_size, eps=config.fusion_layer_norm_eps)
    return nn.LayerNorm(config.fusion_hidden_size, eps=config.fusion_layer_norm_eps)


class CmanFeedForward(nn.Module):
    """Position-wise FFN: `standard` (fc1 -> act -> fc2), `glu` (sigmoid gate) or `swiglu` (SiLU gate)."""

    def __init__(self, config: CmanConfig):
        super().__init__()
        self.variant = config.fusion_ffn
        gated = self.variant in ("glu", "swiglu")
        self.fc1 = nn.Linear(config.fusion_hidden_size, config.fusion_intermediate_size * (2 if gated else 1))
        self.fc2 = nn.Linear(config.fusion_intermediate_size, config.fusion_hidden_size)
        self.act = ACT2FN[config.fusion_hidden_act]
        self.dropout = nn.Dropout(config.fusion_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.fc1(hidden_states)
        if self.variant == "standard":
            hidden_states = self.act(hidden_states)
        else:
            value, gate = hidden_states.chunk(2, dim=-1)
            hidden_states = value * (torch.sigmoid(gate) if self.variant == "glu" else F.silu(gate))
        return self.fc2(self.dropout(hidden_states))


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


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary cos/sin of shape `(seq_len, head_dim)` for `position_ids` of shape `(seq_len,)`."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device).float() / head_dim))
    freqs = position_ids.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


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


class CmanFusionAttention(nn.Module):
    """Multi-head self-attention of the fusion transformer, dispatched to eager or SDPA kernels."""

    def __init__(self, config: CmanConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.fusion_num_attention_heads
        self.head_dim = config.fusion_hidden_size // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(config.fusion_hidden_size, config.fusion_hidden_size)
        self.k_proj = nn.Linear(config.fusion_hidden_size, config.fusion_hidden_size)
        self.v_proj = nn.Linear(config.fusion_hidden_size, config.fusion_hidden_size)
        self.o_proj = nn.Linear(config.fusion_hidden_size, config.fusion_hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_len, _ = hidden_states.shape
        shape = (batch_size, seq_len, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)  # (B, heads, S, head_dim)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        if rotary is not None:
            cos, sin = (t.to(query.dtype) for t in rotary)
            query = query * cos + rotate_half(query) * sin
            key = key * cos + rotate_half(key) * sin

        attention_interface: Callable = eager_attention_forward
        if not output_attentions and self.config._attn_implementation not in (None, "eager"):
            attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.config.fusion_attention_dropout if self.training else 0.0,
            is_causal=False,
        )
        attn_output = self.o_proj(attn_output.reshape(batch_size, seq_len, -1))
        return attn_output, attn_weights


class CmanFusionLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: `x + attn(norm(x))`, then `x + ffn(norm(x))`."""

    def __init__(self, config: CmanConfig):
        super().__init__()
        self.attention_norm = build_norm(config)
        self.attention = CmanFusionAttention(config)
        self.ffn_norm = build_norm(config)
        self.ffn = CmanFeedForward(config)
        self.dropout = nn.Dropout(config.fusion_dropout)

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


class CmanFusionEncoder(nn.Module):
    """
    The unified fusion transformer. Takes the projected tokens of one, two or three modalities, adds a learned
    modality-type embedding and positions counted within each modality, prepends a pooling token, runs
    `fusion_num_hidden_layers` blocks and pools (pooling token or masked mean) to a `(batch, hidden)` vector.
    """

    def __init__(self, config: CmanConfig):
        super().__init__()
        self.config = config
        hidden = config.fusion_hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.modality_type_embeddings = nn.Embedding(len(MODALITY_TYPE_IDS), hidden)
        if config.fusion_position_embedding == "learned":
            self.position_embeddings = nn.Embedding(config.fusion_max_position_embeddings, hidden)
        self.input_dropout = nn.Dropout(config.fusion_dropout)
        self.layers = nn.ModuleList([CmanFusionLayer(config) for _ in range(config.fusion_num_hidden_layers)])
        self.final_norm = build_norm(config)

    def forward(
        self, segments: list[tuple[str, torch.Tensor, torch.Tensor]], output_attentions: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, torch.Tensor]:
        """`segments`: `(modality, tokens (B, L, hidden), mask (B, L) bool)` in a fixed modality order."""
        batch_size = segments[0][1].shape[0]
        device = segments[0][1].device
        pieces = [self.cls_token.expand(batch_size, -1, -1)]
        masks = [torch.ones(batch_size, 1, dtype=torch.bool, device=device)]
        type_ids = [torch.full((1,), MODALITY_TYPE_IDS["cls"], device=device)]
        position_ids = [torch.zeros(1, dtype=torch.long, device=device)]
        for modality, tokens, mask in segments:
            length = tokens.shape[1]
            if length > self.config.fusion_max_position_embeddings:
                raise ValueError(
                    f"The {modality} tower gives {length} tokens but fusion_max_position_embeddings is "
                    f"{self.config.fusion_max_position_embeddings}; raise it in the config or shorten the input."
                )
            pieces.append(tokens)
            masks.append(mask)
            type_ids.append(torch.full((length,), MODALITY_TYPE_IDS[modality], device=device))
            position_ids.append(torch.arange(length, device=device))
        hidden_states = torch.cat(pieces, dim=1)  # (B, S, hidden)
        mask = torch.cat(masks, dim=1)  # (B, S)
        type_ids = torch.cat(type_ids)  # (S,)
        position_ids = torch.cat(position_ids)  # (S,)

        hidden_states = hidden_states + self.modality_type_embeddings(type_ids)[None].to(hidden_states.dtype)
        rotary = None
        if self.config.fusion_position_embedding == "learned":
            hidden_states = hidden_states + self.position_embeddings(position_ids)[None].to(
                hidden_states.dtype
            )
        elif self.config.fusion_position_embedding == "sinusoidal":
            table = sinusoidal_table(
                position_ids, self.config.fusion_hidden_size, self.config.fusion_rope_theta
            )
            hidden_states = hidden_states + table[None].to(hidden_states.dtype)
        else:
            head_dim = self.config.fusion_hidden_size // self.config.fusion_num_attention_heads
            rotary = rotary_cos_sin(position_ids, head_dim, self.config.fusion_rope_theta)
        hidden_states = self.input_dropout(hidden_states)

        attention_mask = mask[:, None, None, :]  # (B, 1, 1, S), True = attend
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, attention_mask, rotary, output_attentions)
            if output_attentions:
                all_attentions = all_attentions + (attn_weights,)
        hidden_states = self.final_norm(hidden_states)

        if self.config.fusion_pooling == "cls":
            pooled = hidden_states[:, 0]
        else:
            weights = mask.to(hidden_states.dtype)[..., None]
            pooled = (hidden_states * weights).sum(1) / weights.sum(1)
        return pooled, all_attentions, type_ids


# --------------------------------------------------------------------------------------------------------------------
# Towers
# --------------------------------------------------------------------------------------------------------------------
def build_tower(config) -> PreTrainedModel:
    """Instantiate a tower (random weights) from its config; only the parts CMAN reads are built."""
    if config.model_type == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder(config)
    kwargs = {}
    if config.model_type in ("bert", "roberta", "xlm-roberta", "camembert", "vit", "deit"):
        kwargs["add_pooling_layer"] = False
    return AutoModel.from_config(config, **kwargs)


def tower_hidden_size(tower: PreTrainedModel) -> int:
    """Width of the tokens a tower emits."""
    if tower.config.model_type == "whisper":
        return tower.config.d_model
    if tower.config.model_type == "timm_wrapper":
        return tower.timm_model.num_features
    return tower.config.hidden_size


def load_pretrained_tower_state(tower: nn.Module, name_or_path: str, modality: str, **kwargs) -> None:
    """
    Load pretrained weights from `name_or_path` into `tower` strictly. A Whisper checkpoint contributes its
    encoder; a positional table longer than the tower's (a shorter Whisper window) is sliced to its first rows;
    pooling/classification heads CMAN does not use are dropped. Anything else that does not match is an error.
    """
    pretrained = AutoModel.from_pretrained(name_or_path, **kwargs)
    if getattr(pretrained.config, "model_type", None) == "whisper":
        pretrained = pretrained.get_encoder()
    copy_matching_state(tower, pretrained.state_dict(), name_or_path, modality)


def speech_recognizer_config(config: CmanConfig):
    """The `WhisperConfig` of the speech recogniser: the audio tower's (same window), encoder and decoder."""
    recognizer = copy.deepcopy(config.audio_config)
    recognizer.is_encoder_decoder = True
    return recognizer


def load_pretrained_recognizer_state(recognizer: nn.Module, name_or_path: str, **kwargs) -> None:
    """Load a full Whisper checkpoint (encoder and decoder) into the speech recogniser, strictly, slicing the encoder
    positions to the recogniser's window."""
    from transformers import WhisperForConditionalGeneration

    pretrained = WhisperForConditionalGeneration.from_pretrained(name_or_path, **kwargs)
    copy_matching_state(recognizer, pretrained.state_dict(), name_or_path, "audio")


def copy_matching_state(tower: nn.Module, source: dict, name_or_path: str, modality: str) -> None:
    """Copy the state dict `source` into `tower` strictly (see [`load_pretrained_tower_state`])."""
    target = tower.state_dict()
    state, unused = {}, []
    for key, value in source.items():
        if key not in target:
            unused.append(key)
            continue
        expected = target[key].shape
        if value.shape != expected:
            if (
                key.endswith("embed_positions.weight")
                and value.shape[1:] == expected[1:]
                and value.shape[0] > expected[0]
            ):
                value = value[: expected[0]]
            else:
                raise ValueError(
                    f"The {modality} checkpoint {name_or_path!r} has {key} of shape {tuple(value.shape)} but the "
                    f"tower expects {tuple(expected)}: the CmanConfig.{modality if modality != 'image' else 'vision'}"
                    "_config does not describe this checkpoint. Build the config with CmanConfig.from_towers(...)."
                )
        state[key] = value
    missing = sorted(set(target) - set(state))
    if missing:
        raise ValueError(
            f"The {modality} checkpoint {name_or_path!r} lacks weights the tower needs: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}. Check that it is a {type(tower).__name__} checkpoint."
        )
    unexpected = [
        k for k in unused if not k.startswith(("pooler.", "classifier.", "head.", "timm_model.classifier"))
    ]
    if unexpected:
        logger.info(
            f"Ignoring {len(unexpected)} weights of {name_or_path} CMAN does not use: {unexpected[:5]}"
        )
    tower.load_state_dict(state, strict=True)


@contextlib.contextmanager
def _quiet_generation_logs():
    """Whisper's `generate` logs, on every call, notes about settings it fills in itself (suppressed tokens, its
    `max_length` next to `max_new_tokens`, the decoder's attention mask); silence them for one call."""
    loggers = [
        logging.get_logger(name)
        for name in ("transformers.generation.utils", "transformers.models.whisper.generation_whisper")
    ]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------
class CmanPreTrainedModel(PreTrainedModel):
    config: CmanConfig
    config_class = CmanConfig
    base_model_prefix = "cman"
    input_modalities = ("text", "audio", "image")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["CmanFusionLayer"]
    _tied_weights_keys: dict[str, str] = {}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Like `PreTrainedModel.from_pretrained`, but strict: a checkpoint that lacks weights of this model (or has
        weights of another shape) is an error rather than a silently re-initialised module."""
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        problems = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
        if problems:
            details = "; ".join(f"{k}: {sorted(map(str, v))[:5]}" for k, v in problems.items())
            raise ValueError(
                f"{pretrained_model_name_or_path} does not hold a complete {cls.__name__} checkpoint ({details}). "
                "Was it saved from a model with another config, or from another model?"
            )
        return (model, info) if wants_info else model

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, CmanScaleNorm):
            init.constant_(module.scale, math.sqrt(module.hidden_size))
        elif isinstance(module, CmanFusionEncoder):
            init.normal_(module.cls_token, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, CmanModel) and module.logit_scale is not None:
            init.constant_(module.logit_scale, math.log(1.0 / self.config.temperature))


class CmanModel(CmanPreTrainedModel):
    """
    Cross-Modal Attention Network. Pass any subset of `input_ids`/`attention_mask` (text), `input_features` or
    `input_values` (audio: Whisper log-mel or AST filter banks) and `pixel_values` (images). Each modality gets its own
    embedding through the fusion transformer; with `fuse=True` and two or more modalities the fused (composed-query)
    embedding is returned too. With `config.transcribe_audio`, the audio also carries its transcript
    (`transcript_input_ids`, from [`transcribe`]): the frozen `speech_recognizer` hears the words, the text tower reads
    them, and the fusion transformer sees them next to the sound.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: CmanConfig):
        super().__init__(config)
        self.text_model = build_tower(config.text_config)
        self.audio_model = build_tower(config.audio_config)
        self.vision_model = build_tower(config.vision_config)
        hidden = config.fusion_hidden_size
        self.text_projection = nn.Linear(tower_hidden_size(self.text_model), hidden)
        self.audio_projection = nn.Linear(tower_hidden_size(self.audio_model), hidden)
        self.vision_projection = nn.Linear(tower_hidden_size(self.vision_model), hidden)
        self.fusion_encoder = CmanFusionEncoder(config)
        self.embedding_projection = nn.Linear(hidden, config.projection_dim, bias=False)
        # A frozen pretrained Whisper that transcribes the audio; never trained, never adapted.
        self.speech_recognizer = None
        if config.transcribe_audio:
            from transformers import GenerationConfig, WhisperForConditionalGeneration

            self.speech_recognizer = WhisperForConditionalGeneration(speech_recognizer_config(config))
            if config.speech_recognizer_generation_config:
                self.speech_recognizer.generation_config = GenerationConfig.from_dict(
                    config.speech_recognizer_generation_config
                )
        # A learned InfoNCE temperature (log of the inverse, as in CLIP); otherwise `config.temperature` is used.
        self.logit_scale = None
        if config.loss_type == "infonce" and config.learn_temperature:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        self.post_init()
        if config.freeze_encoders:
            for tower in self.towers().values():
                tower.requires_grad_(False)
        if self.speech_recognizer is not None:
            self.speech_recognizer.requires_grad_(False)

    # ---------------------------------------------------------------- helpers
    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    def towers(self) -> dict[str, nn.Module]:
        return {modality: getattr(self, attribute) for modality, attribute in TOWER_ATTRIBUTES.items()}

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_encoders:
            # Frozen towers keep their normalisation statistics, even while LoRA adapts them.
            for tower in self.towers().values():
                for module in tower.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        if self.speech_recognizer is not None:
            self.speech_recognizer.eval()
        return self

    @classmethod
    def from_encoders_pretrained(cls, config: CmanConfig, **from_pretrained_kwargs) -> CmanModel:
        """
        Build a CMAN from `config` and load the pretrained weights of every tower whose
        `<modality>_model_name_or_path` is set (Hub id or local folder); new parts start from random weights.
        Use [`CmanConfig.from_towers`] to write such a config.
        """
        model = cls(config)
        names = {
            "text": config.text_model_name_or_path,
            "audio": config.audio_model_name_or_path,
            "image": config.vision_model_name_or_path,
        }
        for modality, name in names.items():
            if name:
                load_pretrained_tower_state(
                    model.towers()[modality], name, modality, **from_pretrained_kwargs
                )
        if model.speech_recognizer is not None:
            if not config.audio_model_name_or_path:
                raise ValueError(
                    "transcribe_audio=True needs a pretrained Whisper checkpoint (audio_model_name_or_path) for the "
                    "speech recogniser; a recogniser with random weights transcribes nothing."
                )
            load_pretrained_recognizer_state(
                model.speech_recognizer, config.audio_model_name_or_path, **from_pretrained_kwargs
            )
        return model

    def lora_target_modules(self) -> list[str]:
        """Names of the tower modules LoRA adapts: attention query/value projections (pointwise convs for timm)."""
        targets = []
        for modality, tower in self.towers().items():
            suffixes = LORA_TARGETS[tower.config.model_type]
            prefix = TOWER_ATTRIBUTES[modality]
            for name, module in tower.named_modules():
                if not name or name.rsplit(".", 1)[-1] not in suffixes:
                    continue
                if isinstance(module, nn.Conv2d) and module.groups != 1:
                    continue
                if isinstance(module, nn.Linear | nn.Conv2d):
                    targets.append(f"{prefix}.{name}")
        return targets

    def trainable_modules(self) -> list[str]:
        """New (non-tower) modules trained next to LoRA; PEFT keeps them as `modules_to_save`."""
        return [
            "text_projection",
            "audio_projection",
            "vision_projection",
            "fusion_encoder",
            "embedding_projection",
        ]

    def apply_lora(
        self, r: int = 8, alpha: int = 16, dropout: float = 0.2, target_modules: list[str] | None = None
    ):
        """
        Wrap the model with PEFT LoRA on the towers' attention query/value projections (see
        [`lora_target_modules`]); the projections and the fusion transformer stay fully trainable. Returns the
        `PeftModel`; `merge_and_unload()` gives back a plain `CmanModel`.
        """
        from peft import get_peft_model

        peft_model = get_peft_model(
            self, self.lora_config(r=r, alpha=alpha, dropout=dropout, target_modules=target_modules)
        )
        if (
            self.logit_scale is not None
        ):  # a bare parameter: PEFT freezes it, but it is trained with the new parts
            self.logit_scale.requires_grad_(True)
        return peft_model

    def lora_config(
        self, r: int = 8, alpha: int = 16, dropout: float = 0.2, target_modules: list[str] | None = None
    ):
        """The PEFT `LoraConfig` [`apply_lora`] uses (seed defaults r=8, alpha=16, dropout=0.2)."""
        from peft import LoraConfig

        return LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=self.lora_target_modules() if target_modules is None else target_modules,
            modules_to_save=self.trainable_modules(),
        )

    # ---------------------------------------------------------------- encoders
    def _text_tokens(self, input_ids, attention_mask=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.text_projection(hidden), attention_mask.bool()

    def _audio_tokens(self, input_features=None, input_values=None, audio_attention_mask=None):
        if self.config.audio_config.model_type == "whisper":
            self._check_whisper_features(input_features)
            hidden = self.audio_model(input_features).last_hidden_state  # (B, frames / 2, d)
            if audio_attention_mask is not None:
                # Stride-2 convolution: one token per two frames.
                mask = audio_attention_mask[:, ::2].bool()
            else:
                mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        else:
            if input_values is None:
                raise ValueError(
                    "The AST audio tower takes `input_values` (filter banks); use the CmanProcessor."
                )
            hidden = self.audio_model(input_values=input_values).last_hidden_state
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        stride = self.config.audio_token_stride
        if (
            stride > 1
        ):  # (B, T, d) -> (B, ceil(T / stride), d); a pooled token is kept if any of its frames is
            hidden = F.avg_pool1d(hidden.transpose(1, 2), stride, stride, ceil_mode=True).transpose(1, 2)
            mask = F.max_pool1d(mask[:, None].float(), stride, stride, ceil_mode=True)[:, 0].bool()
        return self.audio_projection(hidden), mask

    @torch.no_grad()
    def transcribe(
        self,
        input_features: torch.Tensor,
        audio_attention_mask: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """
        Greedy transcripts of the clips by the frozen speech recogniser (`config.transcribe_audio`): Whisper token ids
        `(batch_size, length)`. Decode them with `CmanProcessor.decode_transcripts` and pass the text back to the
        processor as `transcripts=` to embed the audio. `audio_attention_mask` is accepted so that the processor's
        output can be passed as is; Whisper reads its fixed window whole. The recogniser is always in eval mode
        (see [`train`]).

        Example:
        ```python
        >>> inputs = processor(audio=waves, sampling_rate=16000)
        >>> transcripts = processor.decode_transcripts(model.transcribe(**inputs))
        >>> inputs = processor(audio=waves, sampling_rate=16000, transcripts=transcripts)
        >>> audio_embeds = model.get_audio_features(**inputs)
        ```"""
        if self.speech_recognizer is None:
            raise ValueError(
                "This CMAN has no speech recogniser (config.transcribe_audio=False); its audio embedding does not "
                "use transcripts."
            )
        self._check_whisper_features(input_features)
        generation_config = copy.deepcopy(self.speech_recognizer.generation_config)
        generation_config.update(
            max_new_tokens=self.config.transcript_max_new_tokens,
            max_length=None,
            repetition_penalty=self.config.transcript_repetition_penalty,
            do_sample=False,
            num_beams=1,
        )
        generation_config.update(**generate_kwargs)
        with _quiet_generation_logs():
            return self.speech_recognizer.generate(
                input_features=input_features.to(self.speech_recognizer.dtype),
                generation_config=generation_config,
            )

    def _check_whisper_features(self, input_features: torch.Tensor | None) -> None:
        if input_features is None:
            raise ValueError(
                "The Whisper audio tower takes `input_features` (log-mel); use the CmanProcessor."
            )
        expected = 2 * self.config.audio_config.max_source_positions
        if input_features.shape[-1] != expected:
            raise ValueError(
                f"`input_features` has {input_features.shape[-1]} frames but the audio tower's window takes "
                f"{expected} ({self.config.audio_window_seconds} s); use the processor saved with this model."
            )

    def _audio_segments(
        self,
        input_features=None,
        input_values=None,
        audio_attention_mask=None,
        transcript_input_ids=None,
        transcript_attention_mask=None,
    ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """The audio input as fusion segments: the audio tower's tokens and, with `transcribe_audio`, the transcript's."""
        segments = [("audio", *self._audio_tokens(input_features, input_values, audio_attention_mask))]
        if self.config.transcribe_audio:
            if transcript_input_ids is None:
                raise ValueError(
                    "This CMAN reads a transcript next to the audio (config.transcribe_audio=True): pass "
                    "`transcript_input_ids`. Get them with `transcripts = processor.decode_transcripts("
                    "model.transcribe(**inputs))`, then `processor(audio=..., sampling_rate=..., "
                    "transcripts=transcripts)`."
                )
            segments.append(
                ("transcript", *self._text_tokens(transcript_input_ids, transcript_attention_mask))
            )
        elif transcript_input_ids is not None:
            raise ValueError(
                "`transcript_input_ids` were passed, but this CMAN does not read transcripts "
                "(config.transcribe_audio=False)."
            )
        return segments

    def _image_tokens(self, pixel_values):
        if self.config.vision_config.model_type == "timm_wrapper":
            # Convolutions run ~8x faster on CPU in channels-last layout (same numbers).
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
            feature_map = self.vision_model(pixel_values=pixel_values).last_hidden_state  # (B, C, H, W)
            hidden = feature_map.flatten(2).transpose(1, 2)  # (B, H*W, C)
        else:
            hidden = self.vision_model(pixel_values=pixel_values).last_hidden_state
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return self.vision_projection(hidden), mask

    def _embed(self, segments, output_attentions: bool = False):
        pooled, attentions, type_ids = self.fusion_encoder(segments, output_attentions=output_attentions)
        return F.normalize(self.embedding_projection(pooled), dim=-1), attentions, type_ids

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """L2-normalised text embeddings `(batch_size, projection_dim)`."""
        return self._embed([("text", *self._text_tokens(input_ids, attention_mask))])[0]

    def get_audio_features(
        self,
        input_features: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        transcript_input_ids: torch.Tensor | None = None,
        transcript_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """L2-normalised audio embeddings `(batch_size, projection_dim)` (with `transcribe_audio`, pass the
        transcripts too: see [`transcribe`])."""
        return self._embed(
            self._audio_segments(
                input_features,
                input_values,
                audio_attention_mask,
                transcript_input_ids,
                transcript_attention_mask,
            )
        )[0]

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings `(batch_size, projection_dim)`."""
        return self._embed([("image", *self._image_tokens(pixel_values))])[0]

    def _segments(
        self,
        input_ids,
        attention_mask,
        input_features,
        input_values,
        audio_attention_mask,
        pixel_values,
        transcript_input_ids=None,
        transcript_attention_mask=None,
    ) -> dict[str, list[tuple[str, torch.Tensor, torch.Tensor]]]:
        """The fusion segments of each modality passed: `(type, tokens (B, L, fusion_hidden), mask (B, L))`, one per
        modality, plus the transcript's for audio with `transcribe_audio` (towers run once)."""
        segments = {}
        if input_ids is not None:
            segments["text"] = [("text", *self._text_tokens(input_ids, attention_mask))]
        if input_features is not None or input_values is not None:
            segments["audio"] = self._audio_segments(
                input_features,
                input_values,
                audio_attention_mask,
                transcript_input_ids,
                transcript_attention_mask,
            )
        elif transcript_input_ids is not None:
            raise ValueError("`transcript_input_ids` describe audio: pass the audio (`input_features`) too.")
        if pixel_values is not None:
            segments["image"] = [("image", *self._image_tokens(pixel_values))]
        if not segments:
            raise ValueError(
                "CmanModel needs at least one modality: input_ids (text), input_features/input_values (audio) or "
                "pixel_values (images)."
            )
        sizes = {kind: tokens.shape[0] for parts in segments.values() for kind, tokens, _ in parts}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"All modalities must have the same batch size, got {sizes}.")
        return segments

    def encode(
        self,
        combinations: list[tuple[str, ...]],
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        transcript_input_ids: torch.Tensor | None = None,
        transcript_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> dict[tuple[str, ...], torch.Tensor]:
        """
        Embed several modality combinations of the same batch, running each tower once: e.g.
        `combinations=[("text",), ("image",), ("text", "audio")]` gives the text, image and text+audio (composed
        query) embeddings, each `(batch_size, projection_dim)` and L2-normalised.
        """
        segments = self._segments(
            input_ids,
            attention_mask,
            input_features,
            input_values,
            audio_attention_mask,
            pixel_values,
            transcript_input_ids,
            transcript_attention_mask,
        )
        embeddings = {}
        for combination in combinations:
            missing = [m for m in combination if m not in segments]
            if missing or not combination:
                raise ValueError(f"Combination {combination} needs inputs for {missing or 'some modality'}.")
            ordered = [part for m in MODALITIES if m in combination for part in segments[m]]
            embeddings[tuple(combination)] = self._embed(ordered)[0]
        return embeddings

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        transcript_input_ids: torch.Tensor | None = None,
        transcript_attention_mask: torch.Tensor | None = None,
        group_ids: torch.Tensor | None = None,
        fuse: bool = False,
        return_loss: bool | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> CmanOutput:
        r"""
        transcript_input_ids / transcript_attention_mask (`torch.LongTensor` of shape `(batch_size, length)`):
            The text-tower tokens of the audio's transcripts; required with audio when `config.transcribe_audio`
            (see [`transcribe`]).
        group_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Rows with the same id describe the same thing (e.g. a duplicated caption); the loss never uses them as
            negatives of each other.
        fuse (`bool`, defaults to `False`):
            Also embed all the modalities passed together (`fused_embeds`), e.g. text + audio -> image queries.
        return_loss (`bool`, *optional*):
            Compute the retrieval loss over every pair of modalities passed (needs two or more).
        output_attentions (`bool`, defaults to `False`):
            Return the fusion attention probabilities of the fused sequence (or of the only modality passed).
        """
        segments = self._segments(
            input_ids,
            attention_mask,
            input_features,
            input_values,
            audio_attention_mask,
            pixel_values,
            transcript_input_ids,
            transcript_attention_mask,
        )
        fused_attention_wanted = output_attentions and (len(segments) == 1 or fuse)
        embeds, attentions, type_ids = {}, None, None
        for modality, parts in segments.items():
            want = fused_attention_wanted and len(segments) == 1
            embeds[modality], layer_attentions, layer_types = self._embed(parts, want)
            if want:
                attentions, type_ids = layer_attentions, layer_types
        fused = None
        if fuse:
            if len(segments) < 2:
                raise ValueError("`fuse=True` needs two or more modalities in the same call.")
            ordered = [part for m in MODALITIES if m in segments for part in segments[m]]
            fused, layer_attentions, layer_types = self._embed(ordered, fused_attention_wanted)
            if fused_attention_wanted:
                attentions, type_ids = layer_attentions, layer_types

        logits = {}
        for first, second in (("text", "audio"), ("text", "image"), ("audio", "image")):
            if first in embeds and second in embeds:
                logits[f"logits_{first}_{second}"] = embeds[first] @ embeds[second].t()

        loss = None
        if return_loss:
            if len(embeds) < 2:
                raise ValueError("`return_loss=True` needs two or more modalities to contrast.")
            loss = self.retrieval_loss(embeds, group_ids)

        return CmanOutput(
            loss=loss,
            text_embeds=embeds.get("text"),
            audio_embeds=embeds.get("audio"),
            image_embeds=embeds.get("image"),
            fused_embeds=fused,
            fusion_attentions=attentions,
            fusion_token_type_ids=type_ids,
            **logits,
        )

    def inverse_temperature(self) -> torch.Tensor:
        """InfoNCE logit scale: learned (clamped at 100, as CLIP) or `1 / config.temperature`."""
        if self.logit_scale is not None:
            return self.logit_scale.exp().clamp(max=100.0)
        return torch.tensor(1.0 / self.config.temperature)

    def retrieval_loss(
        self, embeds: dict[str, torch.Tensor], group_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Max-margin (or InfoNCE) loss summed over every modality pair, with negatives from all ranks under DDP."""
        if self.config.gather_negatives_across_ranks and dist.is_available() and dist.is_initialized():
            if dist.get_world_size() > 1:
                embeds = {modality: gather_with_grad(value) for modality, value in embeds.items()}
                if group_ids is not None:
                    group_ids = gather_no_grad(group_ids)
        positive_mask = None if group_ids is None else group_ids[:, None] == group_ids[None, :]
        present = [m for m in MODALITIES if m in embeds]
        total = 0.0
        for i, first in enumerate(present):
            for second in present[i + 1 :]:
                scores = embeds[first].float() @ embeds[second].float().t()
                if self.config.loss_type == "infonce":
                    total = total + infonce_loss(scores, self.inverse_temperature(), positive_mask)
                else:
                    total = total + max_margin_loss(
                        scores, self.config.margin, self.config.max_margin_negatives, positive_mask
                    )
        return total


# --------------------------------------------------------------------------------------------------------------------
# Parameter accounting
# --------------------------------------------------------------------------------------------------------------------
PARAMETER_GROUPS = {
    "text_model": "text tower",
    "audio_model": "audio tower",
    "vision_model": "image tower",
    "text_projection": "modality projections",
    "audio_projection": "modality projections",
    "vision_projection": "modality projections",
    "fusion_encoder": "fusion transformer",
    "embedding_projection": "embedding projection",
    "speech_recognizer": "speech recogniser (frozen)",
    "logit_scale": "temperature",
}


def parameter_counts(model: nn.Module) -> dict[str, dict[str, int]]:
    """Total / trainable / LoRA parameter counts per component of a `CmanModel` or a PEFT-wrapped one."""
    counts: dict[str, dict[str, int]] = {}
    for name, parameter in model.named_parameters():
        name = name.removeprefix("base_model.model.")
        if ".original_module." in name:  # PEFT's frozen copy of a `modules_to_save` module
            continue
        group = PARAMETER_GROUPS.get(name.split(".")[0], name.split(".")[0])
        row = counts.setdefault(group, {"total": 0, "trainable": 0, "lora": 0})
        row["total"] += parameter.numel()
        row["trainable"] += parameter.numel() if parameter.requires_grad else 0
        row["lora"] += parameter.numel() if "lora_" in name else 0
    return counts


def format_parameter_table(model: nn.Module) -> str:
    """A Markdown table of [`parameter_counts`] with a total row and the trainable share."""
    counts = parameter_counts(model)
    lines = [
        "| component | parameters | trainable | of which LoRA | trainable share |",
        "|---|---:|---:|---:|---:|",
    ]
    total = {"total": 0, "trainable": 0, "lora": 0}
    for group, row in counts.items():
        for key in total:
            total[key] += row[key]
        share = row["trainable"] / row["total"] if row["total"] else 0.0
        lines.append(f"| {group} | {row['total']:,} | {row['trainable']:,} | {row['lora']:,} | {share:.2%} |")
    share = total["trainable"] / total["total"] if total["total"] else 0.0
    lines.append(
        f"| **total** | **{total['total']:,}** | **{total['trainable']:,}** | **{total['lora']:,}** | **{share:.2%}** |"
    )
    return "\n".join(lines)


__all__ = ["CmanModel", "CmanPreTrainedModel", "CmanOutput", "format_parameter_table", "parameter_counts"]
