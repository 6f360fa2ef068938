"""Scripts run in this process (``run_script``) and the ``composer`` launcher that runs them on
several processes; the tiny models are in :mod:`tests.fixtures`."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import runpy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests import REPO

REPO_ROOT = REPO


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


def composer_launcher() -> str:
    """The ``composer`` launcher installed next to this Python (else the one on PATH)."""
    launcher = Path(sys.executable).with_name("composer")
    return str(launcher) if launcher.exists() else shutil.which("composer") or "composer"


def run_with_repo_on_path(command: list[str], cwd: Path, timeout: int = 400) -> None:
    """Run ``command`` in ``cwd`` with the repository root on PYTHONPATH (run scripts import
    ``tests``); assert that it exits 0, showing the end of its output if not."""
    paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
