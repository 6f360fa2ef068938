"""Run a command-line entry point: user errors become one line on stderr and exit code 2.

Scripts call ``sys.exit(run_user_command(fn, ...))``; the logic stays in ``fn``, which raises
:class:`~llmfoundry.utils.exceptions.UserError` for anything the user can fix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from llmfoundry.utils.exceptions import UserError

USER_ERROR_EXIT_CODE = 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_script_logging(level: int = logging.INFO) -> None:
    """Send log records and Python warnings to stderr at ``level``.

    Does nothing to the handlers if the root logger already has some (e.g. set up by a launcher).

    Args:
        level: the root logger's level.
    """
    logging.basicConfig(stream=sys.stderr, level=level, format=LOG_FORMAT)
    logging.captureWarnings(True)


def one_line(message: object) -> str:
    """``message`` as text with its lines joined, for a single-line error report."""
    return " ".join(str(message).split())


def parse_bool(text: str) -> bool:
    """An argparse ``type`` for flags that also take a value (``--reprocess``, ``--reprocess true``).

    Raises:
        argparse.ArgumentTypeError: if ``text`` is not a yes/no word.
    """
    value = text.strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def run_user_command(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Call ``fn(*args, **kwargs)`` as a script's command.

    Logging and warnings go to stderr at INFO level. A :class:`UserError` is reported as
    ``error: <message>`` on one line of stderr, without a traceback.

    Args:
        fn: the command.
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        The process exit code: 0 on success, 2 on a user error.
    """
    configure_script_logging()
    try:
        fn(*args, **kwargs)
    except UserError as err:
        sys.stderr.write(f"error: {one_line(err)}\n")
        return USER_ERROR_EXIT_CODE
    return 0


LOGGING_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_logging_level(text: str) -> int:
    """An argparse ``type`` for ``--logging-level``: a level name in any case, or its number.

    Raises:
        argparse.ArgumentTypeError: naming the accepted names.
    """
    value = text.strip()
    if value.isdigit():
        return int(value)
    if value.upper() in LOGGING_LEVELS:
        return logging.getLevelNamesMapping()[value.upper()]
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(LOGGING_LEVELS)} (any case) or a number, got {text!r}"
    )
