"""Run a script with one function patched to SIGKILL its own process on a chosen call.

``python killer.py MODULE:ATTR N MODE SCRIPT [ARGS...]`` imports ``MODULE``, replaces its
attribute ``ATTR`` (``Class.method`` allowed) and runs ``SCRIPT`` as ``__main__`` with
``ARGS``. The first ``N - 1`` calls go through; on call ``N``, by ``MODE``:

* ``before``: the process kills itself before the call does anything;
* ``after``: the call runs to its end, then the process kills itself;
* ``half``: a ``torch.save(obj, f)``- or ``Path.write_text(path, text)``-like call writes
  the first half of its bytes, then the process kills itself (a file cut mid-write).

The kill is SIGKILL: no handler, ``finally`` or ``atexit`` runs, as when a node dies.
"""

from __future__ import annotations

import functools
import importlib
import io
import os
import runpy
import signal
import sys
from collections.abc import Callable
from typing import Any


def die() -> None:
    """SIGKILL this process."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def write_half(real: Callable[..., Any], obj: Any, target: Any, *args: Any, **kwargs: Any) -> None:
    """Write the first half of what ``real(obj, target)`` would write to ``target``; for a
    ``Path.write_text``/``write_bytes``-like call (``obj`` a path), half of ``target``."""
    if isinstance(obj, os.PathLike) and isinstance(target, (str, bytes)):
        with open(obj, "w" if isinstance(target, str) else "wb") as out:
            out.write(target[: len(target) // 2])
        return
    buffer = io.BytesIO()
    real(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    if hasattr(target, "write"):
        target.write(data)
        target.flush()
    else:
        with open(target, "wb") as out:
            out.write(data)


def patched(real: Callable[..., Any], call: int, mode: str) -> Callable[..., Any]:
    """``real``, killing the process on its ``call``-th call as ``mode`` says."""
    calls = 0

    @functools.wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls != call:
            return real(*args, **kwargs)
        if mode == "before":
            die()
        if mode == "half":
            write_half(real, *args, **kwargs)
            die()
        result = real(*args, **kwargs)
        die()
        return result

    return wrapper


def main() -> None:
    """Patch the target named on the command line and run the script."""
    target, call, mode, script, *args = sys.argv[1:]
    module_name, attribute = target.split(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, patched(getattr(owner, name), int(call), mode))
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
