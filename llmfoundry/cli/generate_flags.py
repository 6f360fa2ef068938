"""The shared command-line flags of the inference commands (``hf_generate``, ``hf_chat``,
``serve``, ``web_ui``, the inference benchmark), declared from the fields of
:class:`~llmfoundry.inference.options.ModelSource` and
:class:`~llmfoundry.inference.options.Sampling` and spelled as LLM Foundry spells them.

Light on purpose (no torch): the choices are names from :mod:`llmfoundry.utils.constants`
(and the MPT attention implementations, listed in :mod:`llmfoundry.inference.options` and
checked against the MPT package by the CLI tests).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from llmfoundry.inference.options import (
    MPT_ATTN_IMPL_NAMES,
    SWEPT_FLAGS,
    ModelSource,
    Sampling,
    flag_of,
    parse_auth_token,
)
from llmfoundry.utils.cli_utils import parse_bool

__all__ = [
    "MPT_ATTN_IMPL_NAMES",
    "add_dataclass_flags",
    "add_model_flags",
    "add_sampling_flags",
    "flag_names",
    "parse_auth_token",
    "take_model_source",
    "take_sampling",
    "take_sweep",
]


def flag_names(name: str, *short: str) -> list[str]:
    """A flag's option strings: LLM Foundry's ``--snake_case`` spelling, its ``--kebab-case``
    twin and any short options (``flag_names("name_or_path", "-n")``)."""
    return [*short, *dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])]


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type[Any],
    *,
    only: Collection[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    helps: Mapping[str, str] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
    sweep: Collection[str] = (),
) -> None:
    """Add one flag per field of ``cls`` (a :mod:`~llmfoundry.inference.options` dataclass).

    A yes/no field takes ``--flag`` (true), ``--flag VALUE`` and ``--no-flag`` (false).

    Args:
        parser: the parser to extend.
        cls: :class:`ModelSource` or :class:`Sampling`.
        only: the fields to declare (default: all), in the class's order.
        defaults: defaults that differ from the field's.
        helps: help lines that differ from the field's.
        aliases: more long options of a field (serve's ``--model_path``).
        sweep: fields that take one or more values (their default becomes a one-item list).
    """
    defaults, helps, aliases = defaults or {}, helps or {}, aliases or {}
    for field in dataclasses.fields(cls):
        if only is not None and field.name not in only:
            continue
        flag = flag_of(field)
        names = flag_names(field.name, *flag.short) + list(aliases.get(field.name, ()))
        options: dict[str, Any] = {"help": helps.get(field.name, flag.help)}
        if field.default is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = defaults.get(field.name, field.default)
        if flag.choices is not None:
            options["choices"] = list(flag.choices)
        if flag.parse is not None:
            options["type"] = flag.parse
        if flag.optional_value:
            options.update(nargs="?", const=True)
        if field.name in sweep:
            options.update(nargs="+", default=[options["default"]])
        parser.add_argument(*names, dest=field.name, **options)
        if flag.parse is parse_bool:
            _add_negative(parser, field.name)


def _add_negative(parser: argparse.ArgumentParser, name: str) -> None:
    """``--no-name``: sets the yes/no flag ``name`` false (every spelling on a parser that
    :func:`~llmfoundry.cli.argparsing.accept_both_spellings` extends)."""
    parser.add_argument(f"--no-{name}", dest=name, action="store_false", help=f"--{name} false")


def add_model_flags(
    parser: argparse.ArgumentParser,
    *,
    without: Collection[str] = (),
    helps: Mapping[str, str] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Add the flags that say which model to load and how (:class:`ModelSource`'s fields but
    those ``without`` names)."""
    only = [f.name for f in dataclasses.fields(ModelSource) if f.name not in without]
    add_dataclass_flags(parser, ModelSource, only=only, helps=helps, aliases=aliases)


def add_sampling_flags(
    parser: argparse.ArgumentParser,
    max_new_tokens: int = 100,
    do_sample: bool = False,
    sweep: bool = False,
    only: Collection[str] | None = None,
) -> None:
    """Add the flags that control decoding (:class:`Sampling`'s fields), with these two
    defaults; with ``sweep``, the fields of :data:`~llmfoundry.inference.options.SWEPT_FLAGS`
    take several values each."""
    add_dataclass_flags(
        parser,
        Sampling,
        only=only,
        defaults={"max_new_tokens": max_new_tokens, "do_sample": do_sample},
        sweep=SWEPT_FLAGS if sweep else (),
    )


def _take(args: argparse.Namespace, cls: type[Any]) -> dict[str, Any]:
    """The namespace's values of ``cls``'s fields, removed from ``args``."""
    values = vars(args)
    names = [f.name for f in dataclasses.fields(cls)]
    return {name: values.pop(name) for name in names if name in values}


def take_model_source(args: argparse.Namespace) -> ModelSource:
    """The :class:`ModelSource` the parsed flags describe; its flags leave ``args``."""
    return ModelSource(**_take(args, ModelSource))


def take_sampling(args: argparse.Namespace) -> Sampling:
    """The :class:`Sampling` the parsed flags describe; its flags leave ``args``."""
    return Sampling(**_take(args, Sampling))


def take_sweep(args: argparse.Namespace) -> dict[str, list[Any]]:
    """The swept flags' value lists (those ``args`` has); they leave ``args``."""
    values = vars(args)
    return {name: values.pop(name) for name in SWEPT_FLAGS if name in values}
