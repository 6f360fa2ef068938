"""Stop training cleanly once it has run for a given number of seconds."""

from __future__ import annotations

import logging
import time

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from llmfoundry.utils.exceptions import ConfigError

log = logging.getLogger(__name__)


class RunTimeout(Callback):
    """Stop training after ``timeout`` seconds of wall-clock time since ``fit()`` started.

    The check runs after every batch, and the ranks agree on it (any rank over time stops all).
    The stop goes through ``state.stop_training()``: the run ends as if ``max_duration`` had been
    reached at that batch, so Composer's checkpoint saver writes a final checkpoint (when
    ``save_folder`` is set) and the run can be resumed from it.

    Args:
        timeout: seconds of training (measured from fit start in this process; a resumed run
            starts counting again).

    Raises:
        ConfigError: on a non-positive ``timeout``.
    """

    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ConfigError(f"callbacks.run_timeout.timeout={timeout} must be > 0 seconds")
        self.timeout = timeout
        self._started_at: float | None = None

    def fit_start(self, state: State, logger: Logger) -> None:
        del state, logger
        self._started_at = time.monotonic()

    def batch_end(self, state: State, logger: Logger) -> None:
        del logger
        if self._started_at is None:
            return
        elapsed = time.monotonic() - self._started_at
        over = state.device.tensor_to_device(torch.tensor([int(elapsed > self.timeout)]))
        dist.all_reduce(over, reduce_operation="MAX")
        if int(over.item()):
            log.warning(
                "run_timeout: %.1f s of training exceeds timeout=%s s; stopping after batch %d",
                elapsed,
                self.timeout,
                int(state.timestamp.batch),
            )
            state.stop_training()
            self._started_at = None
