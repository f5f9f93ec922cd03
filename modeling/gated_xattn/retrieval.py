# Copied from modeling.common.retrieval: edit modeling/common/retrieval.py, then run `make fix-copies`.
"""The retrieval interface every retrieval family implements, its output, and helpers around it.

A retrieval model embeds each modality into one L2-normalised space:

- `get_text_features(input_ids, attention_mask)`, `get_audio_features(input_features | input_values)` and
  `get_image_features(pixel_values)` return a `BaseModelOutputWithPooling` whose `pooler_output` is the embedding
  `(batch, projection_dim)`;
- `encode(combinations, **inputs)` embeds several modality combinations of one batch at once (a composed query such
  as `("text", "audio")` included), running each tower once;
- `forward(...)` returns a [`RetrievalOutput`]: `text_embeds` / `audio_embeds` / `image_embeds`, the
  temperature-scaled `logits_per_*` and, with `return_loss=True`, the loss.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

MODALITIES = ("text", "audio", "image")
#: The keyword arguments that carry each modality's inputs.
MODALITY_INPUTS = {
    "text": ("input_ids", "attention_mask", "token_type_ids"),
    "audio": ("input_features", "input_values", "audio_attention_mask", "transcript_input_ids", "transcript_attention_mask"),
    "image": ("pixel_values",),
}  # fmt: skip
#: The input whose presence means a modality is passed.
PRIMARY_INPUTS = {
    "text": ("input_ids",),
    "audio": ("input_features", "input_values"),
    "image": ("pixel_values",),
}


@dataclass
class RetrievalOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        The retrieval loss summed over every pair of modalities present.
    logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, other_batch_size)`):
        Temperature-scaled similarities of each text with each image (with each audio clip when no image is
        passed), as CLIP's `logits_per_text`.
    logits_per_audio (`torch.FloatTensor` of shape `(audio_batch_size, other_batch_size)`):
        Of each audio clip with each text (with each image when no text is passed), as CLAP's `logits_per_audio`.
    logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, other_batch_size)`):
        Of each image with each text (with each audio clip when no text is passed), as CLIP's `logits_per_image`.
    text_embeds / audio_embeds / image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
        L2-normalised embedding of each modality on its own.
    text_model_output / audio_model_output / image_model_output (`BaseModelOutputWithPooling`):
        What `get_<modality>_features` returns (hidden states and attentions when asked for).
    combined_embeds (`dict[str, torch.FloatTensor]`, *optional*, with `combinations=`):
        The L2-normalised embedding of each requested combination of modalities (a composed query), keyed
        `"text+audio"` etc., as `encode` gives them.
    """

    loss: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_audio: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    audio_model_output: BaseModelOutputWithPooling | None = None
    image_model_output: BaseModelOutputWithPooling | None = None
    combined_embeds: dict[str, torch.FloatTensor] | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


#: For each modality, the one its `logits_per_<modality>` compares with, in order of preference.
LOGITS_PARTNERS = {"text": ("image", "audio"), "audio": ("text", "image"), "image": ("text", "audio")}


def similarity_logits(
    embeds: dict[str, torch.Tensor], logit_scale: torch.Tensor, logit_bias: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """`logits_per_<modality>` for every modality present with a partner (see `LOGITS_PARTNERS`): cosine
    similarities times `logit_scale` (plus `logit_bias`, for a sigmoid-trained model)."""
    logits = {}
    for modality, partners in LOGITS_PARTNERS.items():
        if embeds.get(modality) is None:
            continue
        partner = next((p for p in partners if embeds.get(p) is not None), None)
        if partner is None:
            continue
        scores = embeds[modality] @ embeds[partner].t().to(embeds[modality].device)
        scores = scores * logit_scale.to(scores.device)
        if logit_bias is not None:
            scores = scores + logit_bias.to(scores.device)
        logits[f"logits_per_{modality}"] = scores
    return logits


class StrictLoadingMixin:
    """For a `PreTrainedModel`: `from_pretrained` is strict, so a checkpoint that lacks weights of this model (or
    has weights of another shape) is an error naming them, rather than a silently re-initialised module."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
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


def present_modalities(inputs: dict[str, Any]) -> list[str]:
    """The modalities whose primary input (`input_ids`, `input_features`/`input_values`, `pixel_values`) is given."""
    return [m for m in MODALITIES if any(inputs.get(name) is not None for name in PRIMARY_INPUTS[m])]


def check_unknown_kwargs(owner: str, kwargs: dict[str, Any], known: tuple[str, ...] = ()) -> None:
    """Raise a `TypeError` naming every unexpected keyword argument (and the closest known name): a misspelt input
    must not be silently ignored."""
    if not kwargs:
        return
    names = known or tuple(name for names in MODALITY_INPUTS.values() for name in names)
    problems = []
    for key in kwargs:
        close = difflib.get_close_matches(key, names, n=1)
        problems.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(f"{owner} got unexpected keyword argument(s): {', '.join(problems)}.")


def combination_key(combination: tuple[str, ...]) -> str:
    """`("text", "audio")` -> `"text+audio"`, the key of a composed query in outputs and losses."""
    return "+".join(combination)


def check_combinations(combinations, available: list[str]) -> list[tuple[str, ...]]:
    """Validate `encode`'s combinations: non-empty tuples of modalities whose inputs are given."""
    checked = []
    for combination in combinations:
        combination = tuple(combination)
        unknown = [m for m in combination if m not in MODALITIES]
        if unknown:
            raise ValueError(f"Combination {combination} names {unknown}; modalities are {MODALITIES}.")
        missing = [m for m in combination if m not in available]
        if missing or not combination:
            raise ValueError(f"Combination {combination} needs inputs for {missing or 'some modality'}.")
        checked.append(combination)
    return checked


# ---------------------------------------------------------------------------------------------- parameter accounting
def parameter_counts(model: nn.Module, groups: dict[str, str]) -> dict[str, dict[str, int]]:
    """Total / trainable / LoRA parameter counts per component of a model (or a PEFT-wrapped one). `groups` names
    the component of each top-level attribute (e.g. `{"text_model": "text tower"}`); others keep their own name."""
    counts: dict[str, dict[str, int]] = {}
    for name, parameter in model.named_parameters():
        name = name.removeprefix("base_model.model.")
        if ".original_module." in name:  # PEFT's frozen copy of a `modules_to_save` module
            continue
        group = groups.get(name.split(".")[0], name.split(".")[0])
        row = counts.setdefault(group, {"total": 0, "trainable": 0, "lora": 0})
        row["total"] += parameter.numel()
        row["trainable"] += parameter.numel() if parameter.requires_grad else 0
        row["lora"] += parameter.numel() if "lora_" in name else 0
    return counts


def format_parameter_table(counts: dict[str, dict[str, int]]) -> str:
    """A Markdown table of [`parameter_counts`] with a total row and the trainable share."""
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
