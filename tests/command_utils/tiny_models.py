"""Scripts run in this process (``run_script``); the tiny models are in :mod:`tests.fixtures`."""

from __future__ import annotations

import contextlib
import io
import logging
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ScriptResult:
    """Exit code and output of a script run in this process."""

    returncode: int
    stdout: str
    stderr: str


def run_script(path: Path, *args: str, stdin: str | None = None) -> ScriptResult:
    """Run a script as ``__main__`` in this process (a fresh interpreter would spend most of a
    test importing llmfoundry), with ``sys.argv``, stdin, stdout and stderr replaced."""
    stdout, stderr = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    argv, real_stdin = sys.argv, sys.stdin
    sys.argv = [str(path), *args]
    sys.stdin = io.StringIO(stdin or "")
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as done:
                code = done.code
    finally:
        sys.argv, sys.stdin = argv, real_stdin
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
    return ScriptResult(int(code or 0), stdout.getvalue(), stderr.getvalue())
