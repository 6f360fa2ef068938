"""Run Python's garbage collector on a fixed batch schedule instead of whenever it decides."""

from __future__ import annotations

import gc

import torch
from composer.core import Callback, State
from composer.loggers import Logger

from llmfoundry.utils.config_checks import PositiveInt, check_arguments


def collect_garbage() -> None:
    """A full ``gc.collect()``, then hand freed CUDA blocks back to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ScheduledGarbageCollector(Callback):
    """Turn automatic garbage collection off for training and collect every ``batch_interval`` batches.

    Automatic collection pauses at unpredictable points, and in data-parallel runs a pause on
    one rank stalls all others; collecting on the same batch everywhere keeps ranks in step.
    Collection runs before the dataloader fetches a batch whose index (batches done so far) is a
    multiple of ``batch_interval``, and once at fit start and end. The collector's previous state
    (enabled or not) is restored at fit end, and also when the trainer closes after a failure.

    Args:
        batch_interval: batches between collections.
        gen_1_batch_interval: batches between extra collections of the two youngest generations
            only (``gc.collect(1)``, cheaper than a full one), on the same schedule; None: none.
        eval_keep_disabled: keep automatic collection off during evaluation too (by default it
            is switched back on while evaluating).

    Raises:
        ConfigError: on an interval below 1.
    """

    def __init__(
        self,
        batch_interval: PositiveInt,
        gen_1_batch_interval: PositiveInt | None = None,
        eval_keep_disabled: bool = False,
    ) -> None:
        check_arguments(
            ScheduledGarbageCollector,
            "callbacks.scheduled_gc.",
            batch_interval=batch_interval,
            gen_1_batch_interval=gen_1_batch_interval,
        )
        self.batch_interval = batch_interval
        self.gen_1_batch_interval = gen_1_batch_interval
        self.eval_keep_disabled = eval_keep_disabled
        self._was_enabled: bool | None = None

    def fit_start(self, state: State, logger: Logger) -> None:
        del state, logger
        self._was_enabled = gc.isenabled()
        gc.disable()
        collect_garbage()

    def before_dataloader(self, state: State, logger: Logger) -> None:
        del logger
        batch = int(state.timestamp.batch)
        if self.gen_1_batch_interval is not None and batch % self.gen_1_batch_interval == 0:
            gc.collect(1)
        if batch % self.batch_interval == 0:
            collect_garbage()

    def eval_start(self, state: State, logger: Logger) -> None:
        del state, logger
        if self._was_enabled is None:
            return  # evaluation outside fit(): leave the collector alone
        collect_garbage()
        if not self.eval_keep_disabled:
            gc.enable()

    def eval_end(self, state: State, logger: Logger) -> None:
        del state, logger
        if self._was_enabled is None:
            return
        if not self.eval_keep_disabled:
            gc.disable()
        collect_garbage()

    def fit_end(self, state: State, logger: Logger) -> None:
        del state, logger
        collect_garbage()
        self._restore()

    def close(self, state: State, logger: Logger) -> None:
        del state, logger
        self._restore()

    def _restore(self) -> None:
        if self._was_enabled is None:
            return
        if self._was_enabled:
            gc.enable()
        else:
            gc.disable()
        self._was_enabled = None
