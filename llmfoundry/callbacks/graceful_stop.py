"""SIGTERM during training: stop at the next batch boundary, save a checkpoint, exit cleanly.

``train`` adds :class:`GracefulStop` to every run. What SIGTERM does to a training process:

* before training starts (building the model, the data): Composer's handler exits with code
  143 (128 + SIGTERM) at once; nothing was trained, so nothing is lost;
* during training: the batch in progress finishes; every process then agrees to stop (with
  several processes, the request is combined over all of them at each batch end, so they stop
  at the same batch; the check is an all-reduce on the CPU, no GPU sync); if the run has a
  ``save_folder`` a checkpoint of that batch is saved (as at any ``save_interval``,
  ``latest-rank{rank}.pt`` pointing to it), and training ends. The
  script then exits with code 0 when a checkpoint was saved (``autoresume: true`` continues
  from it) and 143 when there was nothing to save it to;
* a second SIGTERM while stopping exits at once (code 143), as before.

Composer's launcher sends SIGKILL 30 seconds after SIGTERM; a batch plus a checkpoint must fit.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

import torch
from composer.callbacks import CheckpointSaver
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import dist

log = logging.getLogger(__name__)

# The exit code of a process stopped by SIGTERM with nothing saved (the shell's 128 + 15).
EXIT_STOPPED_UNSAVED = 128 + signal.SIGTERM


class GracefulStop(Callback):
    """On SIGTERM, finish the batch, save a checkpoint (when the run saves any) and stop."""

    def __init__(self) -> None:
        self.requested = False  # SIGTERM arrived (in this process)
        self.stopped = False  # training was stopped because of it
        self.saved = False  # and a checkpoint of the stopping batch was saved
        self._previous: Any = None
        self._group: Any = None  # the gloo group of the agreement (None: the default group)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and callable(self._previous):
            self._previous(signum, frame)  # a second SIGTERM: the previous handler (exit 143)
            return
        self.requested = True

    def fit_start(self, state: State, logger: Logger) -> None:
        """Take over SIGTERM for the length of training; with several processes on GPUs, open
        a CPU (gloo) group for the per-batch agreement, so that it never waits for the GPU."""
        del state, logger
        distributed = dist.get_world_size() > 1 and torch.distributed.is_initialized()
        if distributed and torch.distributed.get_backend() != "gloo":
            self._group = torch.distributed.new_group(backend="gloo")
        try:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread (train() called from a worker thread)
            log.info("SIGTERM is not handled: training runs outside the main thread")

    def _agreed(self, state: State) -> bool:
        """Whether any process received SIGTERM (all processes get the same answer)."""
        del state
        if dist.get_world_size() == 1 or not torch.distributed.is_initialized():
            return self.requested
        # A CPU tensor: reading the answer does not wait for the GPU's queued work.
        flag = torch.tensor([int(self.requested)])
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=self._group)
        return bool(flag.item())

    def batch_end(self, state: State, logger: Logger) -> None:
        """Decide, at the batch boundary, whether to stop; make the checkpoint saver save."""
        del logger
        if self.stopped or not self._agreed(state):
            return
        self.stopped = True
        saver = next((c for c in state.callbacks if isinstance(c, CheckpointSaver)), None)
        batch = int(state.timestamp.batch)
        if saver is None:
            log_stop("SIGTERM: stopping after batch %d; no save_folder, so nothing is saved", batch)
            return
        interval = saver.save_interval

        def save_now(state: State, event: Event) -> bool:
            return event == Event.BATCH_CHECKPOINT or interval(state, event)

        saver.save_interval = save_now
        self.saved = True
        log_stop(
            "SIGTERM: stopping after batch %d and saving a checkpoint to %s", batch, saver.folder
        )

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        """End training once this batch's evaluation and checkpoint are done."""
        del logger
        if self.stopped:
            state.stop_training()

    def fit_end(self, state: State, logger: Logger) -> None:
        """Give SIGTERM back to the handler it had before training."""
        del state, logger
        self._restore()

    def close(self, state: State, logger: Logger) -> None:
        """Give SIGTERM back also when training ended with an error."""
        del state, logger
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def exit_code(self) -> int | None:
        """The code the script should exit with: None to carry on (not stopped, or saved)."""
        return EXIT_STOPPED_UNSAVED if self.stopped and not self.saved else None


def log_stop(message: str, *args: Any) -> None:
    """One warning line about the stop."""
    log.warning(message, *args)
