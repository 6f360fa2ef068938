"""``llmfoundry registry``: what can be named in a config, and where each entry is defined.

* ``registry list [NAME]``: each registry (or one) with its entries, one per line;
* ``registry get [--group NAME]``: a table of the registries: name, description, entries
  (LLM Foundry's command);
* ``registry find GROUP NAME``: the module, file, line and docstring of one entry.

The registries are imported when a command runs, not when the CLI starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmfoundry.cli.pass_through import QuickHelpCommand, QuickHelpGroup

if TYPE_CHECKING:
    from llmfoundry.registry import Registry

USER_ERROR_EXIT_CODE = 2

app = typer.Typer(
    cls=QuickHelpGroup,
    no_args_is_help=True,
    help="Inspect the registries (what a config's `name:` can be).",
    short_help="Inspect the registries (what a config's `name:` can be).",
)


def _registries(group: str | None) -> dict[str, Registry[Any]]:
    """Every registry by name, or only ``group``; an unknown group exits with a one-line error."""
    from llmfoundry.registry import all_registries
    from llmfoundry.utils.exceptions import did_you_mean

    registries = all_registries()
    if group is None:
        return registries
    if group not in registries:
        typer.echo(
            f"error: no registry named '{group}'{did_you_mean(group, registries)} "
            "(`llmfoundry registry get` lists them)",
            err=True,
        )
        raise typer.Exit(code=USER_ERROR_EXIT_CODE)
    return {group: registries[group]}


@app.command("list", cls=QuickHelpCommand)
def list_registries(
    name: str | None = typer.Argument(None, help="A registry (e.g. optimizers); omit to list all."),
) -> None:
    """Print each registry with its entries, or the entries of one registry."""
    for reg_name, reg in _registries(name).items():
        entries = sorted(reg.get_all())
        typer.echo(f"{reg_name}: {reg.description}")
        for entry in entries:
            typer.echo(f"  {entry}")
        if not entries:
            typer.echo("  (none yet)")


@app.command("get", cls=QuickHelpCommand)
def get_registries(
    group: Annotated[
        str | None, typer.Option(help="One registry (e.g. callbacks); default: all of them.")
    ] = None,
) -> None:
    """Show a table of the registries: name, description and entries."""
    from rich.console import Console
    from rich.table import Table

    table = Table("Registry", "Description", "Entries", show_lines=True)
    for reg_name, reg in _registries(group).items():
        table.add_row(reg_name, reg.description, ", ".join(sorted(reg.get_all())) or "(none yet)")
    Console().print(table)


@app.command("find", cls=QuickHelpCommand)
def find_entry(
    group: str = typer.Argument(help="The registry (e.g. callbacks)."),
    name: str = typer.Argument(help="The entry's name (e.g. speed_monitor)."),
) -> None:
    """Show where an entry is defined: module, file, line number and docstring."""
    from rich.console import Console
    from rich.table import Table

    from llmfoundry.utils.cli_utils import one_line
    from llmfoundry.utils.exceptions import UserError

    (reg,) = _registries(group).values()
    try:
        found = reg.find(name)
    except UserError as err:
        typer.echo(f"error: {one_line(err)}", err=True)
        raise typer.Exit(code=USER_ERROR_EXIT_CODE) from err
    table = Table("Module", "File", "Line number", "Docstring", show_lines=True)
    line_no = found.get("line_no")
    table.add_row(
        str(found.get("module") or ""),
        str(found.get("file") or ""),
        "" if line_no is None else str(line_no),
        str(found.get("docstring") or ""),
    )
    Console().print(table)
