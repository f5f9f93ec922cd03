"""The `Trainer` of the generator family: the matching trainer's single-task batches, with the tanh gates of the
gated cross-attention blocks in their own optimizer group (their own learning rate, no weight decay)."""

from __future__ import annotations

import logging

from recipes.training.matching import MatchingTrainer

logger = logging.getLogger(__name__)

#: Name endings of the gate parameters (`GatedXAttnBlock.attention_gate` / `.ffn_gate`).
GATE_SUFFIXES = ("attention_gate", "ffn_gate")


class GeneratorTrainer(MatchingTrainer):
    """
    A gate starts at 0 and multiplies everything its block adds (`tanh(a) * xattn(...)`); weight decay would pull it
    back to 0, so the gates are in their own group without it, at `args.gate_learning_rate`
    (`CaptioningTrainingArguments`; default: the learning rate). On the stamps, 1e-2 opened the feed-forward gates but
    not the attention gates, and the captions stopped depending on the image (see the README): the default is kept.
    """

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        optimizer = super().create_optimizer(model)
        model = self.model if model is None else model
        gates = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith(GATE_SUFFIXES)]
        if not gates:
            return optimizer
        ids = {id(p) for p in gates}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        learning_rate = getattr(self.args, "gate_learning_rate", None) or self.args.learning_rate
        optimizer.add_param_group({"params": gates, "lr": learning_rate, "weight_decay": 0.0})
        logger.info("%d gates: learning rate %g, no weight decay", len(gates), learning_rate)
        return optimizer
