"""The warnings a user cannot act on, silenced in one place, each with the reason.

A warning earns its line when the user can do something about it. These come from the libraries
under us and are about our own choices, so they are dropped; every other warning still shows.
``tests/command_utils/test_demo.py`` fails when the demo (data prep, train, eval, export,
generate) emits a warning that is not listed here. The converters' "Token indices sequence
length is longer than the specified maximum" warning is turned off where their tokenizer is
built (``utils.tokenizer_utils.converter_tokenizer``): they cut long documents themselves.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Silenced:
    """One silenced warning: where it comes from, the start of its message, and why."""

    source: str  # "python" for warnings.warn, else the emitting logger's name
    message: str  # the start of the message, as written (matched literally)
    reason: str


SILENCED: tuple[Silenced, ...] = (
    Silenced(
        "python",
        "No optimizer was specified",
        "the eval command builds a Composer Trainer only to evaluate: it never steps an optimizer",
    ),
    Silenced(
        "python",
        "DataloaderNumBatchesWarning",
        "eval_subset_num_batches caps every evaluator; one with fewer batches simply runs whole",
    ),
    Silenced(
        "transformers.configuration_utils",
        "`use_return_dict` is deprecated",
        "Composer's HuggingFaceModel reads config.use_return_dict, not our code",
    ),
)


class _DropMessages(logging.Filter):
    """Drop the records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def is_silenced(source: str, message: str) -> bool:
    """Whether a warning from ``source`` with ``message`` is one of :data:`SILENCED`."""
    return any(s.source == source and message.startswith(s.message) for s in SILENCED)


def silence_unactionable_warnings() -> None:
    """Install the filters for :data:`SILENCED` (idempotent; other warnings are untouched)."""
    for item in SILENCED:
        if item.source == "python":
            warnings.filterwarnings("ignore", message=re.escape(item.message), category=Warning)
            continue
        logger = logging.getLogger(item.source)
        prefixes = tuple(s.message for s in SILENCED if s.source == item.source)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))
