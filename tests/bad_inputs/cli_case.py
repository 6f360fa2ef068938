"""Run a command's ``main(argv)`` in this process and check how it reports a bad input.

Shared by the bad-input corpora (``test_config_*.py``, ``test_data_*.py``)::

    result = run_cli(main, [str(yaml_path), "model.n_layers=two"])
    message = assert_one_line_error(result, "model.n_layers", "int")

A user error must end the command with a non-zero exit code and exactly one ``error: ...``
line on stderr, the last one, with no traceback; the line names what is wrong (the key, file
or row: ``must_mention``) and says how to fix it (a hint such as "must be", "did you mean",
"choose one of", "is missing", "use ...").
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "RecordingHandler",
    "Result",
    "assert_one_line_error",
    "assert_one_line_message",
    "files_under",
    "run_cli",
]

# Words that tell the user what to do (or what is allowed); every error line has one.
HINT = re.compile(
    r"must|did you mean|choose|one of|valid|allowed|expected|is missing|needs|use |set |"
    r"give|add |remove|pass |write|define|install|fix|rename|should|only|at least|at most",
    re.IGNORECASE,
)


class RecordingHandler(logging.Handler):
    """Keeps every log record it is handed (at ``level`` or above)."""

    def __init__(self, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Result:
    """What a command did: its exit code, its stdout and stderr, and its log records."""

    code: int
    out: str
    err: str
    records: list[logging.LogRecord] = field(default_factory=list)

    @property
    def error_lines(self) -> list[str]:
        """The stderr lines that report a user error (``error: ...``)."""
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def run_cli(main: Callable[[Sequence[str]], int], argv: Sequence[str]) -> Result:
    """Call ``main(argv)`` with stdout, stderr and logging captured, as the process would run.

    An exception that escapes ``main`` is written to stderr as a traceback with exit code 1
    (what the interpreter would do), ``SystemExit`` gives its code (argparse's 2). Handlers
    and warning capture the command installs on the root logger are removed afterwards.

    Args:
        main: the command's entry point (``llmfoundry.cli.commands.train.main``).
        argv: its arguments.

    Returns:
        The :class:`Result`.
    """
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    showwarning_before = warnings.showwarning
    records = RecordingHandler()
    root.addHandler(records)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception:  # an uncaught error: the process would print it and exit 1
                err.write(traceback.format_exc())
                code = 1
    finally:
        for handler in root.handlers:
            if handler not in handlers_before:
                root.removeHandler(handler)
        warnings.showwarning = showwarning_before
    return Result(code, out.getvalue(), err.getvalue(), records.records)


def assert_one_line_error(result: Result, *must_mention: str) -> str:
    """Check that ``result`` is a user error reported in one line; return that line's message.

    Args:
        result: what :func:`run_cli` returned.
        *must_mention: texts the error line must contain (the key path, the file, ...).

    Raises:
        AssertionError: on exit code 0, a traceback, not exactly one ``error:`` line (or one
            that is not the last line of stderr), a missing mention, or no hint of the fix.
    """
    assert result.code != 0, f"exit code 0; stderr:\n{result.err}"
    assert "Traceback" not in result.err, f"a traceback on stderr:\n{result.err}"
    lines = result.error_lines
    assert len(lines) == 1, f"expected one 'error:' line, got {len(lines)}:\n{result.err}"
    last = [line for line in result.err.splitlines() if line.strip()][-1]
    assert last == lines[0], f"the error is not the last line of stderr:\n{result.err}"
    message = lines[0].removeprefix("error:").strip()
    for text in must_mention:
        assert text in message, f"{text!r} is not in the error: {message}"
    assert HINT.search(message), f"the error gives no hint of the fix: {message}"
    return message


def files_under(folder: Path) -> set[str]:
    """Every file and folder under ``folder``, as paths relative to it (empty if it is absent)."""
    if not folder.exists():
        return set()
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def assert_one_line_message(err: Exception, *mentions: str) -> None:
    """Check that the error ``err`` (raised in this process) is one line that names each of
    ``mentions`` and hints at the fix."""
    message = str(err)
    assert "\n" not in message
    for text in mentions:
        assert text in message, f"{text!r} is not in: {message}"
    assert HINT.search(message), f"no hint of the fix: {message}"
