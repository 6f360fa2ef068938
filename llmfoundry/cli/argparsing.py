"""Argument parsing shared by the command-line entry points (scripts and ``llmfoundry``).

Light on purpose: nothing heavy at module level (the standard library and light llmfoundry
utilities), so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from llmfoundry.utils.cli_utils import LOGGING_LEVELS, parse_logging_level

__all__ = [
    "LOGGING_LEVELS",
    "SPELLING_NOTE",
    "BooleanFlag",
    "NameList",
    "accept_both_spellings",
    "add_yaml_arguments",
    "check_yaml_and_overrides",
    "parse_logging_level",
]

SPELLING_NOTE = "Every --flag_name may also be spelled --flag-name."


class BooleanFlag(argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag``, each in either spelling (``--no-trust-remote-code``,
    ``--no_trust_remote_code``): the ``action`` to use for such flags on a parser that
    :func:`accept_both_spellings` extends (argparse's own action ignores undeclared spellings)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        """Set the flag: false for a ``--no-`` spelling, true for any other."""
        if option_string is None:
            return
        negative = {_dashed(o) for o in self.option_strings if o.startswith("--no-")}
        setattr(namespace, self.dest, _dashed(option_string) not in negative)


class NameList(argparse.Action):
    """``nargs="+"`` values that may also be comma-separated, as LLM Foundry's ``llmfoundry
    data_prep`` takes them: ``--splits train val`` and ``--splits train,val`` are the same."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        """Store the values, each comma-separated item on its own."""
        items = [values] if isinstance(values, str) else list(values or [])
        setattr(
            namespace, self.dest, [part for item in items for part in str(item).split(",") if part]
        )


def _dashed(option: str) -> str:
    """``option`` spelled with dashes only (``--no-trust_remote_code`` -> ``--no-trust-remote-code``)."""
    return option.replace("_", "-")


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let each ``--snake_case`` long option also be typed ``--kebab-case`` (and back).

    The other spelling is accepted wherever the declared one is (abbreviations included) and
    is not listed with the flag in ``--help``, whose epilog says so once instead; spellings
    the parser already declares are left as they are.

    Args:
        parser: a parser whose options are all added.

    Returns:
        ``parser``, for ``return accept_both_spellings(parser)``.

    Raises:
        TypeError: for an :class:`argparse.BooleanOptionalAction`, which would ignore the
            other spelling: such flags take ``action=BooleanFlag``.
    """
    actions = parser._option_string_actions
    added = False
    for option, action in list(actions.items()):
        if not option.startswith("--"):
            continue
        if type(action) is argparse.BooleanOptionalAction:
            raise TypeError(f"{option}: use action=BooleanFlag (llmfoundry.cli.argparsing)")
        for twin in (option[2:].replace("_", "-"), option[2:].replace("-", "_")):
            if f"--{twin}" not in actions:
                actions[f"--{twin}"] = action
                added = True
    if added:
        parser.epilog = f"{parser.epilog}\n\n{SPELLING_NOTE}" if parser.epilog else SPELLING_NOTE
    return parser


def add_yaml_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the run config and its overrides (the ``train`` and ``eval`` commands' arguments)."""
    parser.add_argument("yaml_path", metavar="yaml", help="the run config (a YAML file)")
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="key=value",
        help="settings that replace the YAML's (dotted keys: model.n_layers=2)",
    )
    return parser


def check_yaml_and_overrides(yaml_path: str, overrides: Sequence[str]) -> None:
    """Fail in one line on a missing or unparsable YAML or a malformed override, before the
    run's heavy imports (torch, Composer) take their seconds."""
    from llmfoundry.utils.config_utils import load_yaml_with_overrides

    load_yaml_with_overrides(yaml_path, overrides)
