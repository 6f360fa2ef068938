"""``memory_monitor``: Composer's CUDA memory statistics, or the process's resident memory on CPU.

Composer's ``MemoryMonitor`` reads ``torch.cuda.memory_stats()`` and, for a model on any other
device, warns once and logs nothing. A CPU run configured with ``memory_monitor: {}`` would then
report no memory at all; this subclass logs the process's resident set size instead:

    memory/cpu_rss_mb        resident memory of this process now (MiB), after each train batch
    memory/cpu_peak_rss_mb   the highest resident memory (MiB) since training started

Both come from the kernel: ``/proc/self/statm`` (current) and ``VmHWM`` in ``/proc/self/status``
(peak) on Linux, whose high-water mark is reset when ``fit`` starts so that the peak belongs to
this run and not to whatever the process did before. Elsewhere the peak is
``resource.getrusage``'s ``ru_maxrss`` (the whole process lifetime) and the current value is
not logged. On CUDA everything is Composer's behaviour, unchanged.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from pathlib import Path

import torch
from composer.callbacks import MemoryMonitor as ComposerMemoryMonitor
from composer.core import State
from composer.loggers import Logger
from composer.utils import dist

log = logging.getLogger(__name__)

__all__ = ["MemoryMonitor", "current_rss_bytes", "peak_rss_bytes", "reset_peak_rss"]

_MIB = 1024 * 1024
_STATM = Path("/proc/self/statm")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def current_rss_bytes() -> int | None:
    """Resident memory of this process now, in bytes (``None`` where ``/proc`` is missing)."""
    try:
        resident_pages = int(_STATM.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Highest resident memory of this process, in bytes.

    ``VmHWM`` from ``/proc/self/status`` where available (it honours :func:`reset_peak_rss`),
    else ``ru_maxrss``, which Linux reports in KiB and macOS in bytes.
    """
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # the kernel writes "VmHWM:  1234 kB"
    except (OSError, IndexError, ValueError):
        pass
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max_rss if sys.platform == "darwin" else max_rss * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); return whether it worked."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class MemoryMonitor(ComposerMemoryMonitor):
    """Composer's ``MemoryMonitor`` on CUDA; the process's resident memory on other devices.

    On CPU it logs ``memory/cpu_rss_mb`` and ``memory/cpu_peak_rss_mb`` (MiB) after every train
    batch (see the module docstring). With ``dist_aggregate_batch_interval`` set, every
    ``interval``-th batch also logs ``_avg``, ``_min`` and ``_max`` of each value over ranks.

    Args:
        memory_keys: CUDA only, as in Composer: ``torch.cuda.memory_stats()`` keys to log and
            the names to log them under.
        dist_aggregate_batch_interval: every how many batches to aggregate over ranks (off by
            default).
    """

    def __init__(
        self,
        memory_keys: dict[str, str] | None = None,
        dist_aggregate_batch_interval: int | None = None,
    ) -> None:
        super().__init__(
            memory_keys=memory_keys, dist_aggregate_batch_interval=dist_aggregate_batch_interval
        )

    @staticmethod
    def _model_device(state: State) -> torch.device:
        return next(state.model.parameters()).device

    def init(self, state: State, logger: Logger) -> None:
        """Composer's device check on CUDA; on CPU nothing to warn about (RSS is logged)."""
        if self._model_device(state).type == "cuda":
            super().init(state, logger)

    def fit_start(self, state: State, logger: Logger) -> None:
        """Start the CPU peak at this run's beginning (best effort; see :func:`reset_peak_rss`)."""
        del logger
        if self._model_device(state).type not in ("cuda", "meta") and not reset_peak_rss():
            log.debug(
                "could not reset the peak RSS mark: memory/cpu_peak_rss_mb is the lifetime peak"
            )

    def after_train_batch(self, state: State, logger: Logger) -> None:
        """Log CUDA statistics (Composer) or the resident memory of this process (CPU)."""
        device_type = self._model_device(state).type
        if device_type == "cuda":
            super().after_train_batch(state, logger)
            return
        if device_type == "meta":
            return
        report = {"cpu_peak_rss_mb": peak_rss_bytes() / _MIB}
        rss = current_rss_bytes()
        if rss is not None:
            report["cpu_rss_mb"] = rss / _MIB
        interval = self.dist_aggregate_batch_interval
        if interval is not None and state.timestamp.batch.value % interval == 0:
            report.update(_aggregate_over_ranks(report))
        logger.log_metrics({f"memory/{key}": value for key, value in report.items()})


def _aggregate_over_ranks(report: dict[str, float]) -> dict[str, float]:
    """``<key>_avg``, ``_min`` and ``_max`` of each value over all ranks (the value itself alone)."""
    aggregated: dict[str, float] = {}
    world_size = dist.get_world_size()
    for key in sorted(report):  # the same order on every rank: these are collectives
        for suffix, op in (("avg", "SUM"), ("min", "MIN"), ("max", "MAX")):
            value = torch.tensor(report[key], dtype=torch.float64)
            dist.all_reduce(value, reduce_operation=op)
            aggregated[f"{key}_{suffix}"] = value.item() / (world_size if suffix == "avg" else 1)
    return aggregated
