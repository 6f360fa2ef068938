"""Composer's file logger, with the ``log_level`` key that older configs set."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from composer.core import State
from composer.loggers import FileLogger as ComposerFileLogger
from composer.loggers import Logger

from llmfoundry.interfaces.checked_by_building import CheckedByBuilding
from llmfoundry.utils.config_checks import PositiveInt, check_arguments
from llmfoundry.utils.file_utils import check_output_folder

LogLevel = Literal["batch", "epoch", "fit"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


class FileLogger(CheckedByBuilding, ComposerFileLogger):
    """Write metrics (and, by default, the process's stdout/stderr) to a text file.

    Metric lines read ``[metric][batch=<step>]: <name>: <value>``. Composer 0.32 dropped the
    ``log_level`` argument that earlier Composer (and configs written for it) had; it is back:

    * ``batch`` (default): every logged value, as it is logged;
    * ``epoch``: at each epoch end, the latest value of each metric logged during the epoch;
    * ``fit``: at the end of training, the latest value of each metric.

    Args:
        filename: the file, a format string with Composer's ``{run_name}``/``{rank}`` fields.
        remote_file_name: the name it is uploaded under (default: ``filename``).
        log_level: how often metric lines are written (above).
        capture_stdout: also copy the process's stdout into the file.
        capture_stderr: also copy the process's stderr into the file.
        buffer_size: the file's buffering (``open``'s ``buffering``).
        log_traces: also write the engine's traces.
        flush_interval: flush (and upload) every this many batches and epochs.
        overwrite: replace an existing file.

    Raises:
        ConfigError: on an unknown ``log_level`` or a ``flush_interval`` below 1.
    """

    def __init__(
        self,
        filename: str = "{run_name}/logs-rank{rank}.txt",
        remote_file_name: str | None = None,
        *,
        log_level: LogLevel = "batch",
        capture_stdout: bool = True,
        capture_stderr: bool = True,
        buffer_size: int = 1,
        log_traces: bool = True,
        flush_interval: PositiveInt = 100,
        overwrite: bool = False,
    ) -> None:
        check_arguments(
            FileLogger, "loggers.file.", log_level=log_level, flush_interval=flush_interval
        )
        check_output_folder(str(Path(filename).parent), "loggers.file.filename's folder")
        super().__init__(
            filename,
            remote_file_name,
            capture_stdout=capture_stdout,
            capture_stderr=capture_stderr,
            buffer_size=buffer_size,
            log_traces=log_traces,
            flush_interval=flush_interval,
            overwrite=overwrite,
        )
        self.log_level = log_level
        self._latest: dict[str, Any] = {}
        self._latest_step: int | None = None

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.log_level == "batch":
            super().log_metrics(metrics, step)
            return
        self._latest.update(metrics)
        self._latest_step = step

    def _write_latest(self) -> None:
        if self._latest:
            super().log_metrics(self._latest, self._latest_step)
            self._latest = {}

    def epoch_end(self, state: State, logger: Logger) -> None:
        if self.log_level == "epoch":
            self._write_latest()
        super().epoch_end(state, logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        # With log_level "epoch", also what was logged after the last epoch end (a final eval).
        self._write_latest()
        super().fit_end(state, logger)


__all__ = ["LOG_LEVELS", "FileLogger"]
