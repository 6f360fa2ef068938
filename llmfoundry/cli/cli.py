"""``llmfoundry``: command-line access to the library (``llmfoundry registry list``)."""

from __future__ import annotations

import typer

from llmfoundry.cli import registry_cli

app = typer.Typer(no_args_is_help=True, help="LLM Foundry: train, evaluate, export and serve LLMs.")
app.add_typer(registry_cli.app, name="registry")

if __name__ == "__main__":
    app()
