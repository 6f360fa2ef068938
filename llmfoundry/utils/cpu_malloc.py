"""Keep freed large CPU tensors in the process heap, so that a CPU training step reuses them.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB by default) with a
fresh ``mmap`` and returns it with ``munmap`` when it is freed. A CPU training step frees and
reallocates the same large tensors every step (logits, their gradient, attention scores,
activations), so each step page-faults its whole working set back in and the kernel zeroes it:
on the 2-core development machine that is about a sixth of a small MPT's step. Raising the mmap
threshold (and the trim threshold with it) keeps those blocks in the heap instead, as the
tcmalloc / jemalloc setups in PyTorch's CPU performance guide do; the price is a higher peak
resident set (freed blocks stay with the process, and the heap fragments).

``tune_cpu_malloc`` does this on Linux with glibc; set ``LLMFOUNDRY_CPU_MALLOC=default`` to keep
glibc's own settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

ENV_VAR = "LLMFOUNDRY_CPU_MALLOC"
# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 512 << 20


def tune_cpu_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring).

    Returns:
        Whether the settings were applied: False when ``LLMFOUNDRY_CPU_MALLOC=default``, off
        Linux, or where the C library has no ``mallopt`` (musl) or refuses the values.
    """
    if os.environ.get(ENV_VAR, "").strip().lower() == "default":
        return False
    name = ctypes.util.find_library("c")
    if not name or not os.path.exists("/proc/self/status"):
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if applied:
        logger.info(
            "CPU training: large tensors are kept in the heap between steps (glibc mmap threshold "
            "%d MiB); set %s=default to keep glibc's settings",
            MMAP_THRESHOLD_BYTES >> 20,
            ENV_VAR,
        )
    return applied
