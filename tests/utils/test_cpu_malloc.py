"""CPU training keeps large freed tensors in the heap (``llmfoundry.utils.cpu_malloc``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# In a fresh process (the tuning is process-wide): where does a 64 MiB tensor come from?
# glibc's mallinfo2 counts mmap-served bytes in ``hblkhd``.
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    import torch
    from llmfoundry.utils.cpu_malloc import tune_cpu_malloc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    applied = tune_cpu_malloc()
    before = libc.mallinfo2().hblkhd
    block = torch.empty(64 << 20, dtype=torch.uint8)
    mapped = libc.mallinfo2().hblkhd - before
    print(applied, mapped >= 64 << 20)
    """
)


def _probe(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_large_tensors_come_from_the_heap_unless_turned_off() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LLMFOUNDRY_CPU_MALLOC"}
    # tuned: applied, and the 64 MiB block is not a fresh mmap
    assert _probe(env) == "True False"
    # LLMFOUNDRY_CPU_MALLOC=default keeps glibc's own threshold: the block is mmap-ed
    assert _probe({**env, "LLMFOUNDRY_CPU_MALLOC": "default"}) == "False True"
