"""``fdiff_metrics``: log how much the loss and metrics changed since their previous value.

Config (an entry of the ``callbacks:`` section)::

    callbacks:
      fdiff_metrics:
        diff_train_metrics: true   # default false
        diff_eval_metrics: true    # default true

For every value Composer logs, the callback logs its first difference (this value minus the
previous one) under the same name with ``_fdiff`` appended:

* training (``diff_train_metrics``), at the end of every batch from the second on:
  ``loss/train/total_fdiff`` from the batch's rank-averaged loss, and
  ``metrics/train/<metric>_fdiff`` for each training metric;
* evaluation (``diff_eval_metrics``), at the end of every evaluation from the second on:
  ``metrics/<evaluator label>/<metric>_fdiff``, against that evaluator's previous evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from composer.core import Callback, State
from composer.loggers import Logger

__all__ = ["FDiffMetrics"]

# Composer's rank-averaged training loss of the batch (Trainer._train_loop's total_loss_dict).
TRAIN_LOSS_KEY = "loss/train/total"


class FDiffMetrics(Callback):
    """Log the change of the training loss and metrics, and of the evaluation metrics.

    Args:
        diff_train_metrics: log ``loss/train/total_fdiff`` and ``metrics/train/*_fdiff``
            after every batch.
        diff_eval_metrics: log ``metrics/<label>/*_fdiff`` after every evaluation.
    """

    def __init__(self, diff_train_metrics: bool = False, diff_eval_metrics: bool = True) -> None:
        self.diff_train_metrics = diff_train_metrics
        self.diff_eval_metrics = diff_eval_metrics
        # The previous value of every logged name (``loss/train/total``, ``metrics/eval/X``, ...).
        self._previous: dict[str, float] = {}

    def batch_end(self, state: State, logger: Logger) -> None:
        if not self.diff_train_metrics:
            return
        current = _scalars("metrics/train", state.train_metric_values, None)
        loss = _batch_loss(state)
        if loss is not None:
            current[TRAIN_LOSS_KEY] = loss
        self._log_differences(current, logger)

    def eval_end(self, state: State, logger: Logger) -> None:
        if not self.diff_eval_metrics:
            return
        label = state.dataloader_label
        if label is None:
            return
        names = set(state.eval_metrics.get(label, {}))
        self._log_differences(_scalars(f"metrics/{label}", state.eval_metric_values, names), logger)

    def _log_differences(self, current: Mapping[str, float], logger: Logger) -> None:
        differences = {
            f"{name}_fdiff": value - self._previous[name]
            for name, value in current.items()
            if name in self._previous
        }
        if differences:
            logger.log_metrics(differences)
        self._previous.update(current)


def _batch_loss(state: State) -> float | None:
    """The batch's training loss: Composer's all-rank average, else the (last) loss tensor."""
    total = getattr(state, "total_loss_dict", None) or {}
    if TRAIN_LOSS_KEY in total:
        return float(total[TRAIN_LOSS_KEY])
    loss = state.loss
    if isinstance(loss, Mapping) and "total" in loss:
        loss = loss["total"]
    return _scalar(loss)


def _scalar(value: Any) -> float | None:
    """A logged value as a float, or None unless it is a number or a one-element tensor."""
    if isinstance(value, torch.Tensor):
        return float(value.item()) if value.numel() == 1 else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _scalars(prefix: str, values: Mapping[str, Any], names: set[str] | None) -> dict[str, float]:
    """``{prefix/name: value}`` of the scalar ``values`` (only ``names``, when given)."""
    scalars = {}
    for name, value in values.items():
        number = _scalar(value)
        if number is not None and (names is None or name in names):
            scalars[f"{prefix}/{name}"] = number
    return scalars
