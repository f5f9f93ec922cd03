# Copied from modeling.common.matching: edit modeling/common/matching.py, then run `make fix-copies`.
"""What the matching families (early fusion, cross-attention fusion) share: their objectives, heads and outputs.

A matching family reads a text and an image (or an audio clip) *together* and scores the pair. It implements two
methods, and [`MatchingHeadsMixin`] builds every head and objective on them:

- `unimodal(**inputs) -> Unimodal`: runs each tower once and projects its tokens to the fusion width;
- `fuse(text, other, ...) -> FusedPair`: the family's own fusion of one text with one image or clip per row.

Objectives (each weighted in the config, 0 switches one off), as ALBEF, BLIP, ViLT and VQA v2 models train:

- `itc`: image-text contrastive loss on the towers' pooled, projected features (InfoNCE, negatives across ranks);
- `itm`: image-text matching, a binary head on the fused pair, with hard negatives mined from the in-batch `itc`
  similarities (sampled in proportion to them as ALBEF does, or the hardest, or uniform);
- `mlm`: masked language modelling on the text stream, the output tied to the text tower's word embeddings (the
  towers are encoders without an MLM head); the masked inputs come from `DataCollatorForLanguageModeling`;
- `mpm`: masked patch modelling: a share of the image tokens is replaced by a learned mask token, and the fused
  states regress the image tower's (layer-normalised) features of the masked tokens;
- `vqa`: answer classification over a vocabulary, trained with VQA soft scores and binary cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .losses import build_loss
from .retrieval import check_unknown_kwargs, format_parameter_table, parameter_counts
from .towers import audio_tokens, image_tokens, load_pretrained_tower_state, text_tokens

OTHER_MODALITIES = ("image", "audio")
ITM_NEGATIVES = ("sampled", "hardest", "random")
PAIR_OBJECTIVES = ("itc", "itm", "mlm", "mpm")
#: Fusion token type ids of the matching families (0 is the pooling token).
TOKEN_TYPE_IDS = {"pooling": 0, "text": 1, "image": 2, "audio": 3}
#: The keyword arguments of the matching models' `forward`.
INPUT_NAMES = (
    "input_ids", "attention_mask", "token_type_ids", "input_features", "input_values", "audio_attention_mask",
    "pixel_values", "labels", "return_loss", "group_ids", "mlm_input_ids", "mlm_labels",
)  # fmt: skip


def check_matching_fields(config) -> None:
    """Checks of the objective fields a matching family's config declares, naming the bad field."""
    name = type(config).__name__
    for objective in (*PAIR_OBJECTIVES, "vqa"):
        weight = getattr(config, f"{objective}_weight")
        if weight < 0:
            raise ValueError(f"{name}.{objective}_weight must be >= 0, got {weight}.")
    for field in ("mlm_probability", "mpm_probability"):
        if not 0.0 < getattr(config, field) < 1.0:
            raise ValueError(f"{name}.{field} must be in (0, 1), got {getattr(config, field)}.")
    if config.itm_negatives not in ITM_NEGATIVES:
        raise ValueError(
            f"{name}.itm_negatives={config.itm_negatives!r} is not supported; choose one of {ITM_NEGATIVES}."
        )
    if config.speech_recognizer_config is not None:
        raise ValueError(
            f"{name} does not read transcripts: set speech_recognizer_config=None (the audio is the sound alone)."
        )


# --------------------------------------------------------------------------------------------------------- data
@dataclass
class Unimodal:
    """Each tower's tokens, projected to the fusion width (`text`, `other` `(batch, length, hidden)`, with their
    boolean masks), the towers' own features (`text_features`, `other_features`: what `itc` pools and `mpm`
    regresses) and which modality `other` is (`"image"` or `"audio"`)."""

    text: torch.Tensor
    text_mask: torch.Tensor
    other: torch.Tensor
    other_mask: torch.Tensor
    text_features: torch.Tensor
    other_features: torch.Tensor
    other_modality: str
    text_output: ModelOutput | None = None
    other_output: ModelOutput | None = None

    def select(self, text_rows: torch.Tensor, other_rows: torch.Tensor) -> Unimodal:
        """Another pairing of the same rows: text `text_rows[i]` with image/clip `other_rows[i]`."""
        return Unimodal(
            self.text[text_rows], self.text_mask[text_rows], self.other[other_rows], self.other_mask[other_rows],
            self.text_features[text_rows], self.other_features[other_rows], self.other_modality,
        )  # fmt: skip


@dataclass
class FusedPair(ModelOutput):
    r"""
    One fusion of text with an image (or clip) per row.

    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The pair's summary, which the matching and answer heads read.
    text_states / other_states (`torch.FloatTensor` of shape `(batch_size, length, hidden_size)`):
        The fused states of the text tokens and of the image (audio) tokens, in input order.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*): per layer (early fusion: the whole sequence; two
        streams: the text stream).
    attentions (`tuple(torch.FloatTensor)`, *optional*): self-attention probabilities per layer (early fusion: over
        the whole sequence, pooling token first; two streams: the text stream's).
    other_attentions (`tuple(torch.FloatTensor)`, *optional*): two streams: the image (audio) stream's
        self-attention probabilities per layer.
    cross_attentions (`tuple(torch.FloatTensor)`, *optional*): two streams: per layer, the text-to-image (audio)
        cross-attention probabilities `(batch, heads, text_length, other_length)`.
    token_type_ids (`torch.LongTensor`, *optional*): early fusion: the type id of every token of the sequence.
    """

    pooler_output: torch.FloatTensor | None = None
    text_states: torch.FloatTensor | None = None
    other_states: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    other_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    token_type_ids: torch.LongTensor | None = None


@dataclass
class MatchingOutput(ModelOutput):
    r"""
    Output of the matching families' models and heads.

    loss (`torch.FloatTensor` of shape `()`, *optional*, with `return_loss=True` or `labels`):
        The weighted sum of the objectives computed (see the `*_loss` fields).
    logits (`torch.FloatTensor`, *optional*):
        `ForImageTextMatching`: `(batch_size, 2)` scores of "no match" / "match" for each given pair;
        `ForQuestionAnswering`: `(batch_size, num_labels)` answer scores (sigmoid: the predicted VQA score).
    itc_loss / itm_loss / mlm_loss / mpm_loss / vqa_loss (`torch.FloatTensor` of shape `()`, *optional*):
        Each objective computed, unweighted.
    text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
        L2-normalised `itc` embedding of the text (the text tower's pooled, projected features).
    image_embeds / audio_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
        The same for the image (or the clip).
    pooler_output / last_hidden_state / hidden_states / attentions / other_attentions / cross_attentions:
        The fused pair (see [`FusedPair`]); `last_hidden_state` holds the text tokens' fused states.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    itc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mpm_loss: torch.FloatTensor | None = None
    vqa_loss: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    other_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    other_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    token_type_ids: torch.LongTensor | None = None


# -------------------------------------------------------------------------------------------------------- heads
class Pooler(nn.Module):
    """`tanh(dense(x))`, BERT's pooler, over the pair's summary token(s)."""

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states))


class AnswerHead(nn.Module):
    """ViLT's VQA classifier: `dense(2h) -> LayerNorm -> GELU -> dense(num_labels)`."""

    def __init__(self, hidden_size: int, num_labels: int, eps: float = 1e-6):
        super().__init__()
        self.dense = nn.Linear(hidden_size, 2 * hidden_size)
        self.norm = nn.LayerNorm(2 * hidden_size, eps=eps)
        self.classifier = nn.Linear(2 * hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.gelu(self.norm(self.dense(pooled))))


class MaskedLanguageModelingHead(nn.Module):
    """BERT's MLM transform to the text tower's width, then scores over its vocabulary through the tower's own word
    embeddings (tied: the towers are encoders without an MLM head), plus a learned bias."""

    def __init__(self, hidden_size: int, text_hidden_size: int, vocab_size: int):
        super().__init__()
        self.transform = TokenPredictionHead(hidden_size, text_hidden_size)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden_states), word_embeddings, self.bias)


class MaskedPatchModelingHead(nn.Module):
    """The learned token that replaces a masked image token, and the regression of the image tower's features of
    the masked tokens from their fused states."""

    def __init__(self, hidden_size: int, image_hidden_size: int):
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.transform = TokenPredictionHead(hidden_size, hidden_size)
        self.decoder = nn.Linear(hidden_size, image_hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class TokenPredictionHead(nn.Module):
    """`dense -> GELU -> LayerNorm` from the fusion width to `out_features` (BERT's MLM transform)."""

    def __init__(self, hidden_size: int, out_features: int, eps: float = 1e-6):
        super().__init__()
        self.dense = nn.Linear(hidden_size, out_features)
        self.act = ACT2FN["gelu"]
        self.norm = nn.LayerNorm(out_features, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(hidden_states)))


# -------------------------------------------------------------------------------------------------------- mixin
class MatchingHeadsMixin:
    """
    For a matching family's `PreTrainedModel` (with `TowersMixin`) that holds `text_projection` /
    `audio_projection` / `image_projection` to its fusion width, defines `fuse(unimodal, output_attentions,
    output_hidden_states) -> FusedPair` and has called [`build_matching_modules`] in its `__init__`: the towers'
    pass (`unimodal`), `forward`, the `itc` embeddings, the heads each class carries and the weighted objectives.
    """

    #: The objective of the head a class carries (`itm`, `vqa`; none for the bare model); `forward` runs that head.
    own_objectives: tuple[str, ...] = ()
    #: `{auto class: model class name}` written into every saved folder's `auto_map` (set by each family).
    auto_classes: dict[str, str] = {}
    #: Components of the parameter table, by top-level attribute (set by each family).
    parameter_groups: dict[str, str] = {}

    @property
    def head_task(self) -> str | None:
        """The head `forward` runs (`None`: the fused pair only)."""
        return self.own_objectives[0] if self.own_objectives else None

    def uses_pair_objectives(self) -> bool:
        """Whether the pair objectives with a weight above 0 are trained (and their heads built): always with the
        matching head, with the answer head in a multi-task model (`config.multitask`)."""
        return "itm" in self.own_objectives or ("vqa" in self.own_objectives and self.config.multitask)

    def objectives(self) -> tuple[str, ...]:
        """The objectives this model computes: its own head's, and the pair objectives whose weight is above 0 when
        it trains them (the matching head always; the answer head in a multi-task model)."""
        weighted = (
            {o for o in PAIR_OBJECTIVES if getattr(self.config, f"{o}_weight") > 0}
            if self.uses_pair_objectives()
            else set()
        )
        return tuple(o for o in (*PAIR_OBJECTIVES, "vqa") if o in weighted or o in self.own_objectives)

    def build_matching_modules(self, hidden_size: int, pooled_size: int, tower_sizes: dict[str, int]) -> None:
        """The pooler, the `itc` projections and the heads of `objectives()`; call before `post_init()`."""
        config, objectives = self.config, self.objectives()
        self.pooler = Pooler(pooled_size, hidden_size)
        # The `itc` embeddings: what `itc` trains and `itm` mines its negatives with (the bare model has them too;
        # an answer-only model does not).
        self.text_itc_projection = self.image_itc_projection = self.audio_itc_projection = None
        if {"itc", "itm"} & set(objectives) or not self.own_objectives:
            self.text_itc_projection = nn.Linear(tower_sizes["text"], config.projection_dim, bias=False)
            self.image_itc_projection = nn.Linear(tower_sizes["image"], config.projection_dim, bias=False)
            self.audio_itc_projection = nn.Linear(tower_sizes["audio"], config.projection_dim, bias=False)
        self.itm_head = nn.Linear(hidden_size, 2) if "itm" in objectives else None
        self.mlm_head = self.mpm_head = None
        if "mlm" in objectives:
            vocab_size = self.text_model.get_input_embeddings().num_embeddings
            self.mlm_head = MaskedLanguageModelingHead(hidden_size, tower_sizes["text"], vocab_size)
        if "mpm" in objectives:
            self.mpm_head = MaskedPatchModelingHead(hidden_size, tower_sizes["image"])
        self.vqa_head = None
        if "vqa" in objectives:
            labels = set((config.id2label or {}).values())
            if len(labels) < 2 or labels <= {f"LABEL_{i}" for i in range(len(labels))}:
                raise ValueError(
                    f"{type(self).__name__} needs the answer vocabulary: set `id2label` (and `label2id`) in the "
                    "config, e.g. from `recipes.data.stamps_vqa.answer_vocabulary(train)`."
                )
            self.vqa_head = AnswerHead(hidden_size, config.num_labels)
        self.register_buffer("logit_scale", torch.tensor(1.0 / config.temperature).log(), persistent=False)

    def matching_trainable_modules(self) -> list[str]:
        names = ["pooler"]
        if self.text_itc_projection is not None:
            names += ["text_itc_projection", "image_itc_projection", "audio_itc_projection"]
        names += [f"{o}_head" for o in ("itm", "mlm", "mpm", "vqa") if getattr(self, f"{o}_head") is not None]
        return names

    def init_matching_weights(self, module) -> None:
        """`_init_weights` of the parameters this mixin adds to the model itself."""
        from transformers import initialization as init

        if isinstance(module, MaskedPatchModelingHead):
            init.normal_(module.mask_token, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, MaskedLanguageModelingHead):
            init.zeros_(module.bias)
        elif module is self:
            init.constant_(self.logit_scale, float(torch.tensor(1.0 / self.config.temperature).log()))

    @classmethod
    def from_encoders_pretrained(cls, config, **from_pretrained_kwargs):
        """Build the model from `config` and load the pretrained weights of every tower whose
        `<modality>_model_name_or_path` is set; everything else starts from random weights."""
        model = cls(config)
        for modality, tower in model.towers().items():
            name = getattr(config, f"{modality}_model_name_or_path")
            if name:
                load_pretrained_tower_state(tower, name, modality, **from_pretrained_kwargs)
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:  # any saved folder loads into the model and each head class
            module = type(self).__module__.split(".")[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                **{auto: f"{module}.{name}" for auto, name in self.auto_classes.items()},
            }
        super().save_pretrained(save_directory, *args, **kwargs)

    def parameter_table(self) -> str:
        """A Markdown table of total / trainable / LoRA parameters per component."""
        return format_parameter_table(parameter_counts(self, self.parameter_groups))

    # ------------------------------------------------------------------------------------------------ towers
    def unimodal(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> Unimodal:
        """Each tower once: the text and the image (or clip) tokens, projected to the fusion width."""
        has_audio = input_features is not None or input_values is not None
        if input_ids is None or (pixel_values is None) == (not has_audio):
            raise ValueError(
                f"{type(self).__name__} reads a text (`input_ids`) with either an image (`pixel_values`) or an audio "
                "clip (`input_features` / `input_values`) per row; use the model's processor."
            )
        text = text_tokens(
            self.text_model, input_ids, attention_mask, token_type_ids, self.frozen_prefix_cache
        )
        if pixel_values is not None:
            modality, other = "image", image_tokens(self.image_model, pixel_values, self.frozen_prefix_cache)
        else:
            modality = "audio"
            other = audio_tokens(
                self.audio_model,
                input_features,
                input_values,
                audio_attention_mask,
                1,
                self.frozen_prefix_cache,
            )
        if text.hidden.shape[0] != other.hidden.shape[0]:
            raise ValueError(
                f"Pairs need as many texts as {modality}s per batch, got {text.hidden.shape[0]} and "
                f"{other.hidden.shape[0]}."
            )
        projection = getattr(self, f"{modality}_projection")
        return Unimodal(
            self.text_projection(text.hidden), text.mask, projection(other.hidden), other.mask,
            text.hidden, other.hidden, modality, text.output, other.output,
        )  # fmt: skip

    def _with_text(self, input_ids: torch.Tensor, unimodal: Unimodal) -> Unimodal:
        """`unimodal` with the text tower re-run on `input_ids` (the same attention mask): the masked text of `mlm`."""
        text = text_tokens(
            self.text_model, input_ids, unimodal.text_mask.long(), None, self.frozen_prefix_cache
        )
        return Unimodal(
            self.text_projection(text.hidden), unimodal.text_mask, unimodal.other, unimodal.other_mask,
            text.hidden, unimodal.other_features, unimodal.other_modality,
        )  # fmt: skip

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
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        group_ids: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MatchingOutput:
        r"""
        labels (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*):
            VQA soft scores of every answer (a question-answering model): the answer loss.
        return_loss (`bool`, *optional*):
            On a batch of matched pairs, compute the pair objectives the model trains (`itc`, `itm` with mined hard
            negatives, `mlm`, `mpm`), weighted by the config.
        group_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Rows with the same id describe the same thing: never each other's negatives.
        mlm_input_ids / mlm_labels (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
            The masked text and its labels (-100 where not masked), from `DataCollatorForLanguageModeling`.
        output_attentions / output_hidden_states (`bool`, *optional*): the fusion transformer's, per layer.
        return_dict (`bool`, *optional*): `False` returns a tuple.
        """
        check_unknown_kwargs(type(self).__name__ + ".forward", kwargs, INPUT_NAMES)
        unimodal = self.unimodal(
            input_ids, attention_mask, token_type_ids, input_features, input_values, audio_attention_mask,
            pixel_values,
        )  # fmt: skip
        flags = {
            "output_attentions": bool(
                self.config.output_attentions if output_attentions is None else output_attentions
            ),
            "output_hidden_states": bool(
                self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
            ),
        }
        return self.matching_forward(
            unimodal, task=self.head_task, labels=labels, return_loss=return_loss, group_ids=group_ids,
            mlm_input_ids=mlm_input_ids, mlm_labels=mlm_labels, text_unimodal_fn=self._with_text, flags=flags,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------------ pieces
    def itc_embeddings(self, unimodal: Unimodal) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """L2-normalised `itc` embeddings `(text, other)` from the towers' masked-mean features (`None` for a model
        without them)."""
        if self.text_itc_projection is None:
            return None, None

        def mean(features, mask):
            weights = mask.to(features.dtype)[..., None]
            return (features * weights).sum(1) / weights.sum(1).clamp(min=1.0)

        other_projection = getattr(self, f"{unimodal.other_modality}_itc_projection")
        text = F.normalize(self.text_itc_projection(mean(unimodal.text_features, unimodal.text_mask)), dim=-1)
        other = F.normalize(other_projection(mean(unimodal.other_features, unimodal.other_mask)), dim=-1)
        return text, other

    def pair_summary(self, unimodal: Unimodal, flags: dict | None = None) -> FusedPair:
        """Fuse each row's text with its image (clip) and pool: `pooler_output` is what the heads read."""
        fused = self.fuse(unimodal, **(flags or {}))
        fused.pooler_output = self.pooler(fused.pooler_output)
        return fused

    def mined_negatives(self, text_embeds, other_embeds, group_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
        """For each row, the index of a negative image (clip) for its text and of a negative text for its image,
        mined from the in-batch `itc` similarities (`config.itm_negatives`); rows of one group are never each
        other's negatives. A row with no negative at all (a batch of one group) is an error."""
        with torch.no_grad():
            similarity = text_embeds.float() @ other_embeds.float().T
            batch = similarity.shape[0]
            if group_ids is None:
                group_ids = torch.arange(batch, device=similarity.device)
            same = group_ids[:, None] == group_ids[None, :]
            if same.all(dim=1).any():
                raise ValueError(
                    "Image-text matching needs a negative for every row, but some row's whole batch describes the "
                    "same thing (one group id): use larger batches or a sampler that mixes groups."
                )
            mode = self.config.itm_negatives if self.training else "hardest"
            picks = []
            for scores in (similarity, similarity.T):
                if mode == "hardest":
                    picks.append(scores.masked_fill(same, float("-inf")).argmax(dim=1))
                    continue
                weights = (
                    torch.softmax(scores * self.logit_scale.exp(), dim=1)
                    if mode == "sampled"
                    else torch.ones_like(scores)
                )
                weights = weights.masked_fill(same, 0.0) + (~same) * 1e-8
                picks.append(torch.multinomial(weights, 1).squeeze(1))
        return picks[0], picks[1]  # negative other for each text, negative text for each other

    def masked_tokens(self, mask: torch.Tensor, probability: float) -> torch.Tensor:
        """A random share `probability` of the real tokens of each row (at least one), to mask for `mpm`."""
        noise = torch.rand(mask.shape, device=mask.device)
        chosen = (noise < probability) & mask
        # Every row masks at least its lowest-noise real token.
        first = noise.masked_fill(~mask, 2.0).argmin(dim=1)
        chosen[torch.arange(mask.shape[0], device=mask.device), first] = True
        return chosen

    # ------------------------------------------------------------------------------------------------ objectives
    def matching_forward(
        self,
        unimodal: Unimodal,
        *,
        task: str,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        group_ids: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        text_unimodal_fn=None,
        flags: dict | None = None,
    ) -> MatchingOutput:
        """
        Run the head of `task` (`"itm"`: match scores of the given pairs; `"vqa"`: answer scores; `None`: the fused
        pair only) and, with `return_loss` or `labels`, the weighted objectives. `labels` are VQA soft scores
        `(batch, num_labels)`; a batch without them is a batch of matched pairs, on which the pair objectives run.
        `text_unimodal_fn(input_ids)` re-runs the text tower on `mlm_input_ids` for `mlm`.
        """
        config = self.config
        flags = flags or {}
        text_embeds, other_embeds = self.itc_embeddings(unimodal)
        fused = self.pair_summary(unimodal, flags)
        logits = None
        if task == "itm":
            logits = self.itm_head(fused.pooler_output)
        elif task == "vqa":
            logits = self.vqa_head(fused.pooler_output)
        losses = {}
        if labels is not None:
            if self.vqa_head is None:
                raise ValueError("`labels` are VQA answer scores, but this model has no answer head.")
            answer_logits = logits if task == "vqa" else self.vqa_head(fused.pooler_output)
            if labels.shape != answer_logits.shape:
                raise ValueError(
                    f"`labels` must be VQA soft scores of shape {tuple(answer_logits.shape)} (batch, num_labels), "
                    f"got {tuple(labels.shape)}."
                )
            # VQA v2 soft targets with binary cross-entropy, scaled by the number of answers as ViLT does.
            losses["vqa"] = (
                F.binary_cross_entropy_with_logits(answer_logits.float(), labels.float()) * labels.shape[1]
            )
        elif return_loss:
            if not set(PAIR_OBJECTIVES) & set(self.objectives()):
                raise ValueError(
                    f"{type(self).__name__} trains no objective on a batch of pairs: pass VQA `labels`, or switch on a "
                    "pair objective (`itc_weight`, `itm_weight`, ...; `multitask=True` for the answer head)."
                )
            losses.update(
                self._pair_losses(
                    unimodal, fused, text_embeds, other_embeds, group_ids, mlm_input_ids, mlm_labels,
                    text_unimodal_fn, itm_logits=logits if task == "itm" else None,
                )
            )  # fmt: skip
        loss = None
        if losses:
            loss = sum(getattr(config, f"{o}_weight") * value for o, value in losses.items())
        other = unimodal.other_modality
        return MatchingOutput(
            loss=loss,
            logits=logits,
            **{f"{o}_loss": value for o, value in losses.items()},
            text_embeds=text_embeds,
            **{f"{other}_embeds": other_embeds},
            pooler_output=fused.pooler_output,
            last_hidden_state=fused.text_states,
            other_hidden_state=fused.other_states,
            hidden_states=fused.hidden_states,
            attentions=fused.attentions,
            other_attentions=fused.other_attentions,
            cross_attentions=fused.cross_attentions,
            token_type_ids=fused.token_type_ids,
        )

    def _pair_losses(
        self, unimodal, fused, text_embeds, other_embeds, group_ids, mlm_input_ids, mlm_labels, text_unimodal_fn,
        itm_logits=None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        objectives = self.objectives()
        losses = {}
        if "itc" in objectives:
            modality = unimodal.other_modality
            losses["itc"] = build_loss("infonce")(
                {"text": text_embeds, modality: other_embeds}, self.logit_scale.exp(), None, group_ids
            )
        if "itm" in objectives:
            batch = text_embeds.shape[0]
            negative_other, negative_text = self.mined_negatives(text_embeds, other_embeds, group_ids)
            rows = torch.arange(batch, device=text_embeds.device)
            negatives = self.pair_summary(
                unimodal.select(torch.cat([rows, negative_text]), torch.cat([negative_other, rows]))
            )
            positives = itm_logits if itm_logits is not None else self.itm_head(fused.pooler_output)
            scores = torch.cat([positives, self.itm_head(negatives.pooler_output)])
            targets = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(scores.device)
            losses["itm"] = F.cross_entropy(scores.float(), targets)
        if "mlm" in objectives or "mpm" in objectives:
            masked = unimodal
            if "mlm" in objectives:
                if mlm_input_ids is None or mlm_labels is None:
                    raise ValueError(
                        "The mlm objective needs `mlm_input_ids` and `mlm_labels` (a batch masked by "
                        "`DataCollatorForLanguageModeling`; the recipes' matching collator adds them)."
                    )
                masked = text_unimodal_fn(mlm_input_ids, unimodal)
            chosen = None
            if "mpm" in objectives and unimodal.other_modality == "image":
                chosen = self.masked_tokens(unimodal.other_mask, self.config.mpm_probability)
                masked = Unimodal(
                    masked.text, masked.text_mask,
                    torch.where(chosen[..., None], self.mpm_head.mask_token.to(masked.other.dtype), masked.other),
                    masked.other_mask, masked.text_features, masked.other_features, masked.other_modality,
                )  # fmt: skip
            states = self.fuse(masked)
            if "mlm" in objectives:
                scores = self.mlm_head(states.text_states, self.text_model.get_input_embeddings().weight)
                losses["mlm"] = F.cross_entropy(
                    scores.float().flatten(0, 1), mlm_labels.flatten(), ignore_index=-100
                )
            if chosen is not None:
                target = F.layer_norm(unimodal.other_features, unimodal.other_features.shape[-1:]).detach()
                prediction = self.mpm_head(states.other_states)
                losses["mpm"] = F.mse_loss(prediction[chosen].float(), target[chosen].float())
        return losses


__all__ = [
    "FusedPair",
    "MatchingHeadsMixin",
    "MatchingOutput",
    "TOKEN_TYPE_IDS",
    "Unimodal",
    "check_matching_fields",
]
