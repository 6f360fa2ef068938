"""``llmfoundry`` subcommands that hand their arguments, untouched, to a script's parser.

Click parses nothing of such a command (not even ``--help``): every argument after the command's
name goes to the ``main`` of its :mod:`llmfoundry.cli.commands` module, whose argparse parser
answers ``--help`` under the command's full name (``llmfoundry data_prep convert_dataset_json``).

Also here: the group that routes ``llmfoundry eval <yaml>`` to such a command, and the group and
command classes that keep ``--help`` from importing more than Typer itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import typer
from typer.core import TyperCommand, TyperGroup

from llmfoundry.utils.constants import YAML_SUFFIXES


class CommandMain(Protocol):
    """The ``main`` of a :mod:`llmfoundry.cli.commands` module."""

    def __call__(self, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
        """Parse ``argv`` with the command's parser named ``prog``, run it, return the exit code."""
        ...


class PassThroughCommand(TyperCommand):
    """A command whose arguments all reach its callback as ``ctx.args``, in order."""

    # Parameter types as the base class's (typer's own copy of click; not a public module).
    def parse_args(self, ctx, args):
        """Keep ``args`` as they are for the command's own parser."""
        ctx.args = list(args)
        return ctx.args


def _flags_off_by_default(params: list[Any]) -> list[Any]:
    """``params`` with each on/off flag whose default is ``None`` defaulting to ``False``.

    Typer converts a flag's value unless it is already a bool, and its converter imports
    pydantic (half a second): a ``None`` default pays that on every command line that passes
    the flag's command or group, ``--help`` included.
    """
    for param in params:
        if getattr(param, "is_flag", False) and param.default is None:
            param.default = False
    return params


class QuickHelpGroup(TyperGroup):
    """A Typer group whose on/off flags (``--help``, ``--install-completion``) start out
    ``False``, so that passing through it converts nothing (see :func:`_flags_off_by_default`)."""

    # Parameter types as the base class's (typer's own copy of click; not a public module).
    def get_params(self, ctx):
        """The group's parameters, on/off flags defaulting to ``False``."""
        return _flags_off_by_default(super().get_params(ctx))


class QuickHelpCommand(TyperCommand):
    """A Typer command whose ``--help`` converts nothing (see :func:`_flags_off_by_default`)."""

    # Parameter types as the base class's (typer's own copy of click; not a public module).
    def get_params(self, ctx):
        """The command's parameters, on/off flags defaulting to ``False``."""
        return _flags_off_by_default(super().get_params(ctx))


def add_pass_through(
    group: typer.Typer, name: str, main: CommandMain, help: str, stands_for_group: bool = False
) -> None:
    """Add the command ``name`` to ``group``: it runs ``main`` on its arguments and exits with
    its exit code.

    Args:
        group: the Typer app (or sub-app) that gets the command.
        name: the command's name in that group.
        main: the command's ``main``; its parser is named after the command's full path
            (``llmfoundry data_prep convert_dataset_json``).
        help: the one-line description that ``--help`` of the group lists (in full).
        stands_for_group: the command is what the group runs on a YAML
            (:class:`YamlRoutingGroup`): hidden, and its parser is named after the group.
    """
    group.command(
        name,
        cls=PassThroughCommand,
        help=help,
        short_help=help,
        add_help_option=False,
        hidden=stands_for_group,
    )(_callback(main, stands_for_group))


def _callback(main: CommandMain, stands_for_group: bool) -> Callable[[typer.Context], None]:
    """The Typer callback that runs ``main`` under the command's (or its group's) full name."""

    def run(ctx: typer.Context) -> None:
        named = ctx.parent if stands_for_group and ctx.parent is not None else ctx
        raise typer.Exit(main(ctx.args, prog=named.command_path))

    return run


def looks_like_yaml(arg: str) -> bool:
    """Whether a command-line word names a run config: ``*.yaml``/``*.yml`` or an existing file."""
    return arg.endswith(YAML_SUFFIXES) or Path(arg).is_file()


class YamlRoutingGroup(QuickHelpGroup):
    """A group whose first argument may also be a YAML run config instead of a subcommand:
    ``llmfoundry eval my.yaml x=1`` runs the hidden :data:`RUN_COMMAND` on ``my.yaml x=1``,
    while ``llmfoundry eval download-data`` stays a subcommand."""

    RUN_COMMAND = "run"

    # Parameter types as the base class's (typer's own copy of click; not a public module).
    def resolve_command(self, ctx, args):
        """Route a first argument that is not a subcommand but looks like a YAML to the run."""
        if args and args[0] not in self.commands and looks_like_yaml(args[0]):
            return self.RUN_COMMAND, self.commands[self.RUN_COMMAND], args
        return super().resolve_command(ctx, args)
