"""``llmfoundry``: command-line access to the library (``llmfoundry registry list``, ``plot``)."""

from __future__ import annotations

import typer

from llmfoundry.cli import eval_cli, plot_cli, registry_cli

app = typer.Typer(no_args_is_help=True, help="LLM Foundry: train, evaluate, export and serve LLMs.")
app.add_typer(registry_cli.app, name="registry")
app.add_typer(eval_cli.app, name="eval")
app.command("plot")(plot_cli.plot)

if __name__ == "__main__":
    app()
