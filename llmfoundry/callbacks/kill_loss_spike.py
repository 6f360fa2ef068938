"""Stop (or roll back) a run whose training loss diverges: NaN/inf, a persistent spike, or stays high.

Three checks run at the end of every batch on the loss Composer averaged over all ranks (so
every rank takes the same decision):

* **not finite** (NaN or inf): always acted on, whatever ``log_only`` says. The run stops with a
  :class:`TrainingDivergedError` naming the batch, or, with ``rollback: true``, the last checkpoint
  is loaded back and training goes on with the batches that follow (the ones since that
  checkpoint, including the bad one, are skipped because the data stream is not rewound).
* **spike**: once ``window_size`` losses have been seen, a loss of at least
  ``outlier_multiplier`` x the window's mean is an outlier; more than ``patience`` outliers in a
  row is a spike.
* **high loss**: after ``2 * window_size`` batches (early losses of a fresh model are legitimately
  high), at least half of the window above ``loss_cap``.

A spike or high loss logs a warning; with ``log_only: false`` it also stops the run with a
:class:`TrainingDivergedError` (or rolls back, with ``rollback: true``).

Why an exception rather than ``state.stop_training()``: a clean stop makes Composer save a final
checkpoint, and the weights after a NaN (or mid-divergence) are exactly what nobody must resume
from. The exception leaves the last good checkpoint as the newest.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path

from composer.callbacks import CheckpointSaver
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import checkpoint, dist, ensure_tuple, format_name_with_dist

from llmfoundry.utils.config_checks import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check_arguments,
)
from llmfoundry.utils.exceptions import TrainingDivergedError

log = logging.getLogger(__name__)

# Composer's all-reduced, rank-averaged training loss (see Trainer._train_loop).
KEY = "callbacks.kill_loss_spike"
_TOTAL_LOSS_KEY = "loss/train/total"


class KillLossSpike(Callback):
    """Watch the training loss for NaN/inf, spikes and persistently high values.

    Args:
        log_only: on a spike or high loss only log a warning (NaN/inf always stops or rolls back).
        patience: outliers in a row tolerated; one more is a spike.
        outlier_multiplier: a loss at least this many times the window's mean is an outlier.
        window_size: how many recent losses the running mean covers.
        loss_cap: a loss above this is "high"; half a window of them is divergence.
        rollback: instead of stopping, load the newest checkpoint this run's ``save_folder`` holds
            and continue with the following batches (our extension).
        max_rollbacks: rollbacks allowed in one run; the next divergence stops it.

    Raises:
        ConfigError: on a non-positive ``window_size``/``outlier_multiplier`` or negative counts.
        TrainingDivergedError: (during training) when the run is stopped.
    """

    def __init__(
        self,
        log_only: bool = True,
        patience: NonNegativeInt = 4,
        outlier_multiplier: PositiveFloat = 2,
        window_size: PositiveInt = 100,
        loss_cap: float = 10,
        rollback: bool = False,
        max_rollbacks: NonNegativeInt = 3,
    ) -> None:
        check_arguments(
            KillLossSpike,
            f"{KEY}.",
            window_size=window_size,
            outlier_multiplier=outlier_multiplier,
            patience=patience,
            max_rollbacks=max_rollbacks,
        )
        self.log_only = log_only
        self.patience = patience
        self.outlier_multiplier = outlier_multiplier
        self.window_size = window_size
        self.loss_cap = loss_cap
        self.rollback = rollback
        self.max_rollbacks = max_rollbacks
        self.rollbacks_done = 0
        self.loss_window: deque[float] = deque(maxlen=window_size)
        self.outliers_in_a_row = 0

    def batch_end(self, state: State, logger: Logger) -> None:
        loss = _train_loss(state)
        batch = int(state.timestamp.batch)
        if not math.isfinite(loss):
            self._diverged(state, logger, f"the training loss of batch {batch} is {loss}")
            return
        problem = self._check_window(loss, batch)
        self.loss_window.append(loss)
        if problem is None:
            return
        log.warning("kill_loss_spike: %s", problem)
        if not self.log_only:
            self._diverged(state, logger, problem)

    def _check_window(self, loss: float, batch: int) -> str | None:
        """A description of the divergence ``loss`` completes, or None."""
        if len(self.loss_window) < self.window_size:
            return None
        mean = sum(self.loss_window) / len(self.loss_window)
        if loss >= self.outlier_multiplier * mean:
            self.outliers_in_a_row += 1
            # Report once per spike, when patience runs out, not on every later outlier.
            if self.outliers_in_a_row == self.patience + 1:
                return (
                    f"loss spike at batch {batch}: {self.outliers_in_a_row} losses in a row at least "
                    f"{self.outlier_multiplier}x the running mean {mean:.4g} (last {loss:.4g}); "
                    "consider a lower learning rate"
                )
            return None
        self.outliers_in_a_row = 0
        high = sum(1 for value in self.loss_window if value > self.loss_cap)
        if batch >= 2 * self.window_size and high >= self.window_size / 2:
            return (
                f"persistently high loss at batch {batch}: {high} of the last {self.window_size} "
                f"losses exceed loss_cap={self.loss_cap}; consider a lower learning rate"
            )
        return None

    def _diverged(self, state: State, logger: Logger, problem: str) -> None:
        """Roll back if allowed and possible, otherwise stop the run."""
        if not self.rollback:
            raise TrainingDivergedError(f"kill_loss_spike: {problem}; stopping the run")
        if self.rollbacks_done >= self.max_rollbacks:
            raise TrainingDivergedError(
                f"kill_loss_spike: {problem}; max_rollbacks={self.max_rollbacks} already used, stopping the run"
            )
        path = _newest_checkpoint(state)
        if path is None:
            raise TrainingDivergedError(
                f"kill_loss_spike: {problem}; rollback needs a checkpoint but this run has saved none "
                "(set save_folder and save_interval)"
            )
        self._roll_back(state, logger, path, problem)

    def _roll_back(self, state: State, logger: Logger, path: Path, problem: str) -> None:
        """Load ``path`` into ``state`` (weights, optimizer, schedulers, timestamp) and reset the window."""
        bad_batch = int(state.timestamp.batch)
        # The dataset position is deliberately not restored: the loader goes on past the bad
        # batches instead of replaying them. Our own counters must survive the load too.
        rollbacks_done = self.rollbacks_done
        checkpoint.load_checkpoint(
            str(path), state, logger, progress_bar=False, ignore_keys=_drop_dataset_state
        )
        self.rollbacks_done = rollbacks_done + 1
        self.loss_window.clear()
        self.outliers_in_a_row = 0
        log.warning(
            "kill_loss_spike: %s; rolled back to %s (batch %d), skipping batches %d-%d (rollback %d of %d)",
            problem,
            path,
            int(state.timestamp.batch),
            int(state.timestamp.batch) + 1,
            bad_batch,
            self.rollbacks_done,
            self.max_rollbacks,
        )
        logger.log_metrics({"kill_loss_spike/rollbacks": self.rollbacks_done})


def _train_loss(state: State) -> float:
    """The batch's training loss averaged over ranks (falls back to this rank's ``state.loss``)."""
    total = getattr(state, "total_loss_dict", None) or {}
    if _TOTAL_LOSS_KEY in total:
        return float(total[_TOTAL_LOSS_KEY])
    loss = state.loss
    parts = list(loss.values()) if isinstance(loss, dict) else list(ensure_tuple(loss))
    return float(sum(float(part) for part in parts))


def _newest_checkpoint(state: State) -> Path | None:
    """The newest checkpoint file of the run's checkpoint saver, or None.

    Prefers what this process saved; after a resume that has not saved yet, the newest ``*.pt``
    file in the save folder.
    """
    savers = [cb for cb in state.callbacks if isinstance(cb, CheckpointSaver)]
    if not savers:
        return None
    saver = savers[0]
    if saver.saved_checkpoints:
        return Path(saver.saved_checkpoints[-1])
    folder = Path(format_name_with_dist(saver.folder, state.run_name))
    files = [p for p in folder.glob("*.pt") if p.is_file()] if folder.is_dir() else []
    rank = dist.get_global_rank()
    mine = [p for p in files if f"rank{rank}" in p.name] or files
    return max(mine, key=lambda p: p.stat().st_mtime) if mine else None


def _drop_dataset_state(state_dict: dict) -> None:
    """``ignore_keys`` hook for ``load_checkpoint``: keep the data loader where it is."""
    state_dict.get("state", {}).pop("dataset_state", None)
