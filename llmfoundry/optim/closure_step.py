"""The step of this package's own optimizers (Lion and its variants, no-op): evaluate the closure,
then update."""

from __future__ import annotations

from collections.abc import Callable
from typing import overload

import torch

__all__ = ["ClosureStepOptimizer"]


class ClosureStepOptimizer(torch.optim.Optimizer):
    """An optimizer whose :meth:`step` calls the closure (with gradients enabled) if given, then
    :meth:`_update` (with gradients disabled), and returns the closure's loss.

    Subclasses implement :meth:`_update`.
    """

    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Take one optimization step.

        Args:
            closure: optional function that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update()
        return loss

    def _update(self) -> None:
        """Update the parameters from their gradients (runs under ``torch.no_grad``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _update()")
