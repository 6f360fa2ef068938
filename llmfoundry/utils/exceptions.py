"""Errors a user can fix (bad config, bad data, missing file), each with a one-line message.

The command-line entry points print these as a single line and exit non-zero, without a
traceback. Programming errors stay ordinary Python exceptions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Base of every error the user fixes by changing their input; ``str(err)`` is one line."""


class ConfigError(UserError):
    """A config key is unknown, missing, of the wrong type or has an unusable value."""


class MissingFileError(UserError):
    """A file or folder named in the input does not exist."""


class DatasetError(UserError):
    """Input data is missing, malformed or empty (names the file, split or row)."""


class TokenizerError(UserError):
    """The tokenizer could not be found or loaded."""


class MissingDependencyError(UserError):
    """An optional dependency is not installed (names the extra that provides it)."""


class TrainingDivergedError(UserError):
    """Training stopped because the loss diverged (NaN/inf, a persistent spike, or stays high)."""


def closest_match(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``word``, if any is reasonably close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error quotes of a library's multi-line message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix for an error message, or ``""``."""
    match = closest_match(word, candidates)
    return f"; did you mean '{match}'?" if match else ""
