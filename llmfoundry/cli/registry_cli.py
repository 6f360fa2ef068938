"""``llmfoundry registry list [NAME]``: what can be named in a config."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True, help="Inspect the registries (what a config's `name:` can be)."
)


@app.command("list")
def list_registries(
    name: str | None = typer.Argument(None, help="A registry (e.g. optimizers); omit to list all."),
) -> None:
    """Print each registry with its entries, or the entries of one registry."""
    from llmfoundry.registry import all_registries
    from llmfoundry.utils.exceptions import did_you_mean

    registries = all_registries()
    if name is not None and name not in registries:
        typer.echo(
            f"error: no registry named '{name}'{did_you_mean(name, registries)}", err=True
        )
        raise typer.Exit(code=2)
    selected = {name: registries[name]} if name else registries
    for reg_name, reg in selected.items():
        entries = sorted(reg.get_all())
        typer.echo(f"{reg_name}: {reg.description}")
        for entry in entries:
            typer.echo(f"  {entry}")
        if not entries:
            typer.echo("  (none yet)")
