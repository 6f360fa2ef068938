"""``no_op``: an optimizer whose step changes nothing (to run a model through training unchanged,
e.g. to measure throughput, or to evaluate with the training loop's callbacks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, overload

import torch

__all__ = ["NoOp"]


class NoOp(torch.optim.Optimizer):
    """An optimizer that leaves the parameters as they are.

    Its parameter groups carry ``lr: 0.0`` so that learning-rate schedulers and monitors work
    with it as with any other optimizer.

    Args:
        params: the parameters (or parameter groups) it is given.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]]) -> None:
        super().__init__(params, {"lr": 0.0})

    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Call ``closure`` (with gradients enabled) if given and return its loss; update nothing."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()
