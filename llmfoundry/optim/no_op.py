"""``no_op``: an optimizer whose step changes nothing (to run a model through training unchanged,
e.g. to measure throughput, or to evaluate with the training loop's callbacks)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from llmfoundry.optim.closure_step import ClosureStepOptimizer

__all__ = ["NoOp"]


class NoOp(ClosureStepOptimizer):
    """An optimizer that leaves the parameters as they are.

    Its parameter groups carry ``lr: 0.0`` so that learning-rate schedulers and monitors work
    with it as with any other optimizer. Its step calls ``closure`` (with gradients enabled) if
    given and returns its loss.

    Args:
        params: the parameters (or parameter groups) it is given.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]]) -> None:
        super().__init__(params, {"lr": 0.0})

    def _update(self) -> None:
        """Update nothing."""
