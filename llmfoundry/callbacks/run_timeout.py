"""``run_timeout``: end a process that is still alive long after training finished.

What it guards against: a run whose training is over but whose process does not exit (a rank
stuck in a collective at teardown, an upload that never returns, a dataloader worker that
holds the interpreter). On a cluster such a run keeps its GPUs until someone notices.

At ``fit_end`` the callback starts a daemon timer. If the process is still running ``timeout``
seconds later, the callback logs an error and sends SIGINT to its own process, which raises
``KeyboardInterrupt`` in the main thread, so the run ends with a traceback of where it hung and
a non-zero exit status. A process that exits in time never notices the timer (it is a daemon).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from composer.core import Callback, State
from composer.loggers import Logger

from llmfoundry.utils.config_checks import PositiveFloat, check_arguments

log = logging.getLogger(__name__)


def _interrupt_hung_process(timeout: float) -> None:
    log.error(
        "run_timeout: the process is still alive %s s after training ended; interrupting it "
        "(SIGINT) so that it exits instead of holding its devices",
        timeout,
    )
    os.kill(os.getpid(), signal.SIGINT)


class RunTimeout(Callback):
    """Interrupt the process if it has not exited ``timeout`` seconds after ``fit`` ended.

    Args:
        timeout: seconds to wait after training ends (LLM Foundry's default: 1800).

    Raises:
        ConfigError: on a non-positive ``timeout``.
    """

    def __init__(self, timeout: PositiveFloat = 1800) -> None:
        check_arguments(RunTimeout, "callbacks.run_timeout.", timeout=timeout)
        self.timeout = timeout
        self.timer: threading.Timer | None = None

    def fit_end(self, state: State, logger: Logger) -> None:
        """Start (or restart, after a second ``fit``) the countdown to the interrupt."""
        del state, logger
        if self.timer is not None:
            self.timer.cancel()
        self.timer = threading.Timer(self.timeout, _interrupt_hung_process, [self.timeout])
        self.timer.daemon = True
        self.timer.start()
