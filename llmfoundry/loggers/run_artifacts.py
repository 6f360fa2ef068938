"""A logger destination that keeps a run's metrics and writes them as CSV, JSON and a PNG.

Registered as ``run_artifacts`` (``loggers: {run_artifacts: {folder: ...}}``); the train command
adds one to every run through :func:`build_run_artifacts_logger`. See
:mod:`llmfoundry.utils.run_artifacts` for the file formats.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist, format_name_with_dist, parse_uri

from llmfoundry.utils.run_artifacts import METRICS_SUBFOLDER, MetricPoint, write_run_artifacts

log = logging.getLogger(__name__)

DEFAULT_FOLDER = "{run_name}/metrics"


def scalar_value(value: Any) -> float | None:
    """``value`` as a float if it is a single number (Python, NumPy or one-element tensor)."""
    if isinstance(value, bool | int | float | np.number):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().item())
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.item())
    return None


class RunArtifactsLogger(LoggerDestination):
    """Record every scalar metric of a run; at the end of training write them out as files.

    On global rank 0 it keeps each ``(step, metric, value)`` logged to Composer's logger, plus each
    optimizer param group's learning rate after every batch (named ``lr-<Optimizer>/group<i>``,
    as Composer's ``LRMonitor`` does, so the plot has it without that callback). At ``fit_end``
    it writes ``metrics.csv``, ``metrics.json`` and ``metrics.png`` into ``folder`` and, with
    ``remote_folder``, hands them to the run's uploaders (e.g. the save folder's object store).
    At ``close`` it writes again if anything was logged since (a run that stopped early or an
    eval-only run). Other ranks record and write nothing.

    Args:
        folder: local folder for the files; may hold Composer's ``{run_name}``/``{rank}`` fields.
        plot: whether to draw ``metrics.png``.
        remote_folder: if set, the files are also passed to ``Logger.upload_file`` as
            ``<remote_folder>/<file name>`` at the end of training.
    """

    def __init__(
        self,
        folder: str = DEFAULT_FOLDER,
        plot: bool = True,
        remote_folder: str | None = None,
    ) -> None:
        self.folder_format = folder
        self.plot = plot
        self.remote_folder = remote_folder
        self.folder: Path | None = None
        self.run_name: str | None = None
        # Keyed by (step, metric) so a value logged twice in one step (e.g. by LRMonitor and by
        # this class) is kept once, with the last value; dicts keep first-logged order.
        self._values: dict[tuple[int, str], float] = {}
        self._last_step = 0
        self._unwritten = False

    @property
    def points(self) -> list[MetricPoint]:
        """The recorded values, in logging order."""
        return [MetricPoint(step, name, value) for (step, name), value in self._values.items()]

    def init(self, state: State, logger: Logger) -> None:
        del logger
        self.run_name = state.run_name
        self.folder = Path(format_name_with_dist(self.folder_format, state.run_name))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if dist.get_global_rank() != 0:
            return
        step = self._last_step if step is None else int(step)
        self._last_step = step
        for name, value in metrics.items():
            number = scalar_value(value)
            if number is not None:
                self._values[(step, name)] = number
                self._unwritten = True

    def batch_end(self, state: State, logger: Logger) -> None:
        del logger
        lrs = {
            f"lr-{type(optimizer).__name__}/group{index}": group["lr"]
            for optimizer in state.optimizers
            for index, group in enumerate(optimizer.param_groups)
        }
        self.log_metrics(lrs, step=state.timestamp.batch.value)

    def fit_end(self, state: State, logger: Logger) -> None:
        written = self.write()
        if self.remote_folder is not None:
            for path in written:
                logger.upload_file(
                    remote_file_name=f"{self.remote_folder.rstrip('/')}/{path.name}",
                    file_path=path,
                    overwrite=True,
                )

    def close(self, state: State, logger: Logger) -> None:
        del state, logger
        if self._unwritten:
            self.write()

    def write(self) -> list[Path]:
        """Write the files now (rank 0 only; nothing elsewhere) and return their paths."""
        if dist.get_global_rank() != 0:
            return []
        if self.folder is None:
            raise RuntimeError("RunArtifactsLogger.write() before the trainer's init event")
        points = self.points
        if not points:
            log.info("no metrics were logged; not writing run artefacts to %s", self.folder)
            return []
        written = write_run_artifacts(points, self.folder, plot=self.plot, title=self.run_name)
        self._unwritten = False
        log.info("wrote run artefacts: %s", ", ".join(str(p) for p in written))
        return written


def build_run_artifacts_logger(save_folder: str | None) -> RunArtifactsLogger:
    """The run-artefacts destination for a train run with ``save_folder`` (the train command's).

    * local ``save_folder`` → files in ``<save_folder>/metrics``;
    * remote ``save_folder`` (``s3://bucket/path``) → files in ``{run_name}/metrics`` locally and
      uploaded to ``<path>/metrics`` through the run's uploader for that bucket;
    * no ``save_folder`` → ``{run_name}/metrics`` under the working directory.

    Args:
        save_folder: the run config's ``save_folder`` (may hold ``{run_name}``).

    Returns:
        The destination, to add to the trainer's ``loggers``.
    """
    if save_folder is None:
        return RunArtifactsLogger()
    backend, _, path = parse_uri(save_folder)
    if not backend:
        return RunArtifactsLogger(folder=f"{save_folder.rstrip('/')}/{METRICS_SUBFOLDER}")
    return RunArtifactsLogger(remote_folder=f"{path.rstrip('/')}/{METRICS_SUBFOLDER}")


__all__ = ["RunArtifactsLogger", "build_run_artifacts_logger", "scalar_value"]
