"""``TokenAccuracy``: how often the model's most likely next token is the actual one."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from llmfoundry.utils.constants import IGNORE_INDEX


class TokenAccuracy(Metric):
    """The fraction of target tokens (those not equal to ``ignore_index``) that the logits' argmax
    predicts, pooled over every batch (and every process) before dividing.

    Args:
        ignore_index: the target value of positions that are not scored (padding, prompts).
        dist_sync_on_step: sync the counts across processes at every ``update``.
    """

    full_state_update = False
    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, ignore_index: int = IGNORE_INDEX, dist_sync_on_step: bool = False) -> None:
        super().__init__(dist_sync_on_step=dist_sync_on_step)
        self.ignore_index = ignore_index
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Count the scored positions of ``target`` and those where ``preds.argmax(-1)`` hits.

        Args:
            preds: logits ``(..., vocab)``.
            target: token ids with the shape of ``preds`` without its last dimension.
        """
        target = target.to(preds.device)
        scored = target != self.ignore_index
        hits = (preds.argmax(dim=-1) == target) & scored
        self.correct += hits.sum()
        self.total += scored.sum()

    def compute(self) -> torch.Tensor:
        """Correct over scored tokens (0 when nothing was scored)."""
        if int(self.total) == 0:
            return torch.tensor(0.0)
        return self.correct.float() / self.total
