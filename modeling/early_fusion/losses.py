# Copied from modeling.common.losses: edit modeling/common/losses.py, then run `make fix-copies`.
"""Contrastive losses over several modalities, shaped like open_clip's `ClipLoss` / `SigLipLoss`: modules that take
the embeddings (and the model's temperature and bias) and sum a pairwise loss over every pair of modalities present.

Under `torch.distributed` the embeddings of every rank are gathered (with gradients to each rank's own slice, as
open_clip's `gather_with_grad`), so every rank contrasts against the global batch. With `local_loss=True` each rank
only scores its own anchors against the global batch (less compute, the same gradients after DDP averaging).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

MODALITY_ORDER = ("text", "audio", "image")
MAX_MARGIN_NEGATIVES = ("hardest", "all", "semi_hard", "top_k")


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather `tensor` (batch first) from every rank, keeping the gradient path to each rank's own slice."""
    gathered = torch.distributed.nn.functional.all_gather(tensor)
    return torch.cat(gathered, dim=0)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def distributed_world() -> tuple[int, int]:
    """`(rank, world_size)` of the default process group, `(0, 1)` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ContrastiveLoss(nn.Module):
    """
    Base of the retrieval losses: gathers the embeddings across ranks, then sums `pair_loss` over every pair of
    modalities present (text-audio, text-image, audio-image).

    `forward(embeds, logit_scale=None, logit_bias=None, group_ids=None)`: `embeds` maps a modality (or a composed query,
    e.g. `"text+audio"`) to its L2-normalised embeddings `(batch, dim)` (rows of the same index describe the same item); `group_ids` `(batch,)` marks rows that
    describe the same thing (e.g. a duplicated caption): they are never negatives of each other.

    Args:
        gather_across_ranks (`bool`, defaults to `True`): contrast against the embeddings of every rank.
        local_loss (`bool`, defaults to `False`): score only this rank's anchors (against the global batch).
    """

    uses_logit_scale = False
    uses_logit_bias = False
    #: The margin at which `diagnostics` counts active hinges (a max-margin loss uses its own).
    diagnostic_margin = 0.2

    def __init__(self, gather_across_ranks: bool = True, local_loss: bool = False):
        super().__init__()
        self.gather_across_ranks = gather_across_ranks
        self.local_loss = local_loss
        #: What the last call saw (see [`similarity_diagnostics`]), averaged over modality pairs and directions.
        self.diagnostics: dict[str, float] = {}

    def forward(
        self,
        embeds: dict[str, torch.Tensor],
        logit_scale: torch.Tensor | None = None,
        logit_bias: torch.Tensor | None = None,
        group_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Modalities in their usual order; other keys (e.g. a composed "text+audio") after them, as given.
        present = sorted(
            (m for m in embeds if embeds[m] is not None),
            key=lambda m: MODALITY_ORDER.index(m) if m in MODALITY_ORDER else len(MODALITY_ORDER),
        )
        if len(present) < 2:
            raise ValueError(f"A contrastive loss needs two or more modalities, got {present}.")
        sizes = {m: embeds[m].shape[0] for m in present}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Every modality needs one row per item for the loss, got batch sizes {sizes}.")
        batch_size = next(iter(sizes.values()))
        if self.uses_logit_scale and logit_scale is None:
            raise ValueError(f"{type(self).__name__} needs the model's `logit_scale`.")
        rank, world_size = distributed_world()
        local = {m: embeds[m].float() for m in present}
        everyone = local
        if group_ids is None:
            group_ids = torch.arange(batch_size, device=local[present[0]].device) + rank * batch_size
        all_groups = group_ids
        offset = 0
        if self.gather_across_ranks and world_size > 1:
            everyone = {m: gather_with_grad(value) for m, value in local.items()}
            all_groups = gather_no_grad(group_ids)
            offset = rank * batch_size
        anchors = local if self.local_loss else everyone
        anchor_groups = group_ids if self.local_loss else all_groups
        anchor_offset = offset if self.local_loss else 0
        # positives[i, j]: anchor i and candidate j describe the same item; the diagonal of the anchors' own rows.
        labels = torch.arange(anchor_groups.shape[0], device=anchor_groups.device) + anchor_offset
        same_group = anchor_groups[:, None] == all_groups[None, :]  # (A, N)
        total = 0.0
        diagnostics = []
        for i, first in enumerate(present):
            for second in present[i + 1 :]:
                scores = anchors[first] @ everyone[second].t()  # (A, N) cosines, first -> second
                # second -> first: the same matrix transposed when every row is an anchor.
                reverse = anchors[second] @ everyone[first].t() if self.local_loss else scores.t()
                total = total + self.pair_loss(scores, reverse, labels, same_group, logit_scale, logit_bias)
                diagnostics += [
                    similarity_diagnostics(direction.detach(), labels, same_group, self.diagnostic_margin)
                    for direction in (scores, reverse)
                ]
        self.diagnostics = {
            key: sum(d[key] for d in diagnostics) / len(diagnostics) for key in diagnostics[0]
        }
        return total

    def pair_loss(
        self,
        scores: torch.Tensor,
        reverse_scores: torch.Tensor,
        labels: torch.Tensor,
        same_group: torch.Tensor,
        logit_scale: torch.Tensor | None,
        logit_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """The loss of one modality pair: `scores` `(A, N)` are the cosines of the first modality's anchors with
        every item of the second, `reverse_scores` the same from the second modality's anchors. `labels[a]` is the
        column of anchor `a`'s own item; `same_group` `(A, N)` marks every candidate that describes the same thing."""
        raise NotImplementedError


def similarity_diagnostics(
    scores: torch.Tensor, labels: torch.Tensor, same_group: torch.Tensor, margin: float
) -> dict[str, float]:
    """What a batch's cosine matrix `(A, N)` says about the space (row `a`'s positive is column `labels[a]`):

    - `similarity_spread`: standard deviation of all the cosines (near 0 when the space has collapsed);
    - `positive_similarity`: mean cosine of the positive pairs;
    - `hardest_negative_margin`: mean over anchors of `s(positive) - max s(negative)` (> 0: the positive ranks first);
    - `active_hinges`: share of (anchor, negative) pairs with `margin + s(negative) - s(positive) > 0`.
    """
    rows = torch.arange(labels.shape[0], device=labels.device)
    positives = scores[rows, labels]
    negatives = scores.masked_fill(same_group, float("-inf"))
    hardest = negatives.max(dim=1).values
    has_negative = torch.isfinite(hardest)
    hinges = (margin + scores - positives[:, None] > 0) & ~same_group
    return {
        "similarity_spread": float(scores.std()),
        "positive_similarity": float(positives.mean()),
        "hardest_negative_margin": float((positives - hardest)[has_negative].mean())
        if has_negative.any()
        else 0.0,
        "active_hinges": float(hinges.sum() / (~same_group).sum().clamp(min=1)),
    }


class InfoNCELoss(ContrastiveLoss):
    """Symmetric InfoNCE (CLIP): cross-entropy of `logit_scale * cosine` towards the matching item, averaged over the
    two directions; other items of the anchor's group are masked out rather than counted as negatives."""

    uses_logit_scale = True

    def pair_loss(self, scores, reverse_scores, labels, same_group, logit_scale, logit_bias):
        others = same_group.clone()
        others[torch.arange(labels.shape[0], device=labels.device), labels] = False
        total = 0.0
        for direction in (scores, reverse_scores):
            logits = (direction * logit_scale).masked_fill(others, torch.finfo(direction.dtype).min)
            total = total + F.cross_entropy(logits, labels)
        return total / 2


class SigmoidLoss(ContrastiveLoss):
    """The pairwise sigmoid loss of SigLIP: every (anchor, candidate) pair is a binary match / no-match decision on
    `logit_scale * cosine + logit_bias`; summed over candidates, averaged over anchors. Items of the anchor's group
    count as matches."""

    uses_logit_scale = True
    uses_logit_bias = True

    def pair_loss(self, scores, reverse_scores, labels, same_group, logit_scale, logit_bias):
        if logit_bias is None:
            raise ValueError("SigmoidLoss needs the model's `logit_bias`.")
        logits = scores * logit_scale + logit_bias  # (A, N); each pair is scored once
        targets = 2 * same_group.to(logits.dtype) - 1  # +1 for matches, -1 otherwise
        return -F.logsigmoid(targets * logits).sum(dim=1).mean()


class MaxMarginLoss(ContrastiveLoss):
    """
    Bidirectional max-margin (triplet) loss of VSE++ on cosine similarities: for each anchor, the hinge
    `margin + s(anchor, negative) - s(anchor, positive)` over the negatives of the batch, averaged over anchors and
    summed over the two directions. Which negatives count:

    - `hardest`: the hardest one (VSE++);
    - `all`: the sum over all of them (VSE0; a gentle warm-up);
    - `semi_hard`: the hardest of those less similar than the positive (FaceNet's semi-hard negatives; the hardest
      when there is none), which keeps early training from chasing negatives it cannot yet separate;
    - `top_k`: the mean over the `top_k` hardest.

    Args:
        margin (`float`, defaults to 0.2).
        negatives (`str`, defaults to `"hardest"`).
        top_k (`int`, defaults to 5): negatives averaged with `negatives="top_k"`.
    """

    def __init__(self, margin: float = 0.2, negatives: str = "hardest", top_k: int = 5, **kwargs):
        super().__init__(**kwargs)
        if negatives not in MAX_MARGIN_NEGATIVES:
            raise ValueError(f"MaxMarginLoss negatives={negatives!r}; choose one of {MAX_MARGIN_NEGATIVES}.")
        if margin < 0:
            raise ValueError(f"MaxMarginLoss margin must be >= 0, got {margin}.")
        if top_k < 1:
            raise ValueError(f"MaxMarginLoss top_k must be >= 1, got {top_k}.")
        self.margin = margin
        self.negatives = negatives
        self.top_k = top_k

    @property
    def diagnostic_margin(self) -> float:
        return self.margin

    def pair_loss(self, scores, reverse_scores, labels, same_group, logit_scale, logit_bias):
        total = 0.0
        rows = torch.arange(labels.shape[0], device=labels.device)
        for direction in (scores, reverse_scores):
            positives = direction[rows, labels]  # (A,)
            cost = (self.margin + direction - positives[:, None]).clamp(min=0).masked_fill(same_group, 0.0)
            if self.negatives == "hardest":
                per_anchor = cost.max(dim=1).values
            elif self.negatives == "all":
                per_anchor = cost.sum(dim=1)
            elif self.negatives == "top_k":
                per_anchor = cost.topk(min(self.top_k, cost.shape[1]), dim=1).values.mean(dim=1)
            else:  # semi_hard: the hardest negative less similar than the positive, else the hardest
                easier = (direction < positives[:, None]) & ~same_group
                semi_hard = cost.masked_fill(~easier, -1.0).max(dim=1).values
                per_anchor = torch.where(easier.any(dim=1), semi_hard, cost.max(dim=1).values)
            total = total + per_anchor.mean()
        return total


#: Loss modules by name (`loss_type` in configs and recipes).
LOSSES: dict[str, type[ContrastiveLoss]] = {
    "infonce": InfoNCELoss,
    "sigmoid": SigmoidLoss,
    "max_margin": MaxMarginLoss,
}


def build_loss(loss_type: str, **kwargs) -> ContrastiveLoss:
    """A loss module by name, e.g. `build_loss("max_margin", margin=0.2, negatives="hardest")`."""
    if loss_type not in LOSSES:
        raise ValueError(f"loss_type={loss_type!r} is not supported; choose one of {tuple(LOSSES)}.")
    return LOSSES[loss_type](**kwargs)
