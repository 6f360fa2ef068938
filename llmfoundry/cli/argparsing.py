"""Argument parsing shared by the command-line entry points (scripts and ``llmfoundry``).

Light on purpose: nothing heavy at module level (the standard library and light llmfoundry
utilities), so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from llmfoundry.utils.cli_utils import LOGGING_LEVELS, parse_bool, parse_logging_level

__all__ = [
    "CONVERTER_FLAGS",
    "LOGGING_LEVELS",
    "SPELLING_NOTE",
    "AddFlags",
    "BooleanFlag",
    "NameList",
    "ParserBuilder",
    "accept_both_spellings",
    "add_converter_flags",
    "add_yaml_arguments",
    "check_yaml_and_overrides",
    "command_parser",
    "parse_logging_level",
]

SPELLING_NOTE = "Every --flag_name may also be spelled --flag-name."

AddFlags = Callable[[argparse.ArgumentParser], object]
"""A command's flag declarations: ``add_flags(parser)`` adds them to ``parser``."""


class ParserBuilder(Protocol):
    """A command's ``build_parser(prog=None)``."""

    def __call__(self, prog: str | None = None) -> argparse.ArgumentParser:
        """A new parser for the command, named ``prog`` in its usage line."""
        ...


def command_parser(description: str | None, add_flags: AddFlags, **options: Any) -> ParserBuilder:
    """A command's ``build_parser``: each parser it builds is described by ``description`` (the
    command module's docstring, its ``--help`` text), takes ``options`` as
    :class:`argparse.ArgumentParser` does, gets its flags from ``add_flags`` and accepts both
    spellings of each (:func:`accept_both_spellings`)."""

    def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=prog, description=description, **options)
        add_flags(parser)
        return accept_both_spellings(parser)

    return build_parser


class _StoresValue(argparse.Action):
    """An action that stores ``value_of(values, option_string)`` at its ``dest``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        """Store the value (an option string is needed where the value depends on it)."""
        setattr(namespace, self.dest, self.value_of(values, option_string))

    def value_of(self, values: str | Sequence[Any] | None, option_string: str | None) -> Any:
        """The value to store."""
        raise NotImplementedError


class BooleanFlag(_StoresValue, argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag``, each in either spelling (``--no-trust-remote-code``,
    ``--no_trust_remote_code``): the ``action`` to use for such flags on a parser that
    :func:`accept_both_spellings` extends (argparse's own action ignores undeclared spellings)."""

    def value_of(self, values: str | Sequence[Any] | None, option_string: str | None) -> bool:
        """False for a ``--no-`` spelling, true for any other."""
        negative = {_dashed(o) for o in self.option_strings if o.startswith("--no-")}
        return option_string is None or _dashed(option_string) not in negative


class NameList(_StoresValue):
    """``nargs="+"`` values that may also be comma-separated, as LLM Foundry's ``llmfoundry
    data_prep`` takes them: ``--splits train val`` and ``--splits train,val`` are the same."""

    def value_of(self, values: str | Sequence[Any] | None, option_string: str | None) -> list[str]:
        """The values, each comma-separated item on its own."""
        items = [values] if isinstance(values, str) else list(values or [])
        return [part for item in items for part in str(item).split(",") if part]


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


# The flags the converters (``data_prep`` and ``convert`` commands) share, declared once: the
# same name means the same option everywhere. A command changes a declaration (its own help,
# ``required``) with :func:`add_converter_flags`' keyword arguments.
CONVERTER_FLAGS: dict[str, dict[str, Any]] = {
    "dataset": {"required": True, "help": "the dataset: a Hub name or a local path"},
    "splits": {"nargs": "+", "action": NameList, "help": "splits to write (default: train)"},
    "out_root": {"required": True, "help": "output folder; one sub-folder per split"},
    "data_subset": {"help": "subset (config) name, if the dataset has several"},
    "data_files": {
        "nargs": "+",
        "action": NameList,
        "help": "data files for a builder name such as json",
    },
    "compression": {"default": None, "help": "shard compression, e.g. zstd"},
    "concat_tokens": {"type": int, "help": "tokenize and concatenate into this many tokens"},
    "tokenizer": {"help": "tokenizer folder or hub name (needed with --concat_tokens)"},
    "tokenizer_kwargs": {"help": "tokenizer options as JSON, e.g. '{\"use_fast\": true}'"},
    "bos_text": {"default": "", "help": "text put before each document"},
    "eos_text": {"default": "", "help": "text put after each document"},
    "no_wrap": {"action": "store_true", "help": "drop a document's tokens past one sample"},
    "num_workers": {
        "type": int,
        "default": None,
        "help": "processes that tokenize (default: one per CPU core; 0 or 1: in this process)",
    },
    "skip_bad_rows": {"action": "store_true", "help": "skip malformed rows (counted)"},
    "trust_remote_code": {"type": parse_bool, "nargs": "?", "const": True, "default": False},
}


def add_converter_flags(
    parser: argparse.ArgumentParser, *names: str, **changes: dict[str, Any]
) -> argparse.ArgumentParser:
    """Add the shared converter flags ``--<name>`` (in order), each as :data:`CONVERTER_FLAGS`
    declares it updated with ``changes[name]`` (``tokenizer={"help": ...}``).

    Returns:
        ``parser``.

    Raises:
        KeyError: for a name that is not a shared flag.
    """
    for name in names:
        parser.add_argument(f"--{name}", **{**CONVERTER_FLAGS[name], **changes.get(name, {})})
    return parser
