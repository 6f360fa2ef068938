"""``llmfoundry plot FOLDER``: redraw a run's ``metrics.png`` from its ``metrics.csv``/``.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def plot(
    folder: Annotated[
        Path,
        typer.Argument(
            help="A run's metrics folder (or its save folder, which has metrics/ inside)."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="The PNG to write (default: metrics.png in the folder)."
        ),
    ] = None,
) -> None:
    """Regenerate the loss / eval metrics / learning-rate plot of a training run."""
    from llmfoundry.utils.cli_utils import USER_ERROR_EXIT_CODE, one_line
    from llmfoundry.utils.exceptions import UserError
    from llmfoundry.utils.run_artifacts import regenerate_plot

    try:
        path = regenerate_plot(folder, output)
    except UserError as err:
        typer.echo(f"error: {one_line(err)}", err=True)
        raise typer.Exit(code=USER_ERROR_EXIT_CODE) from None
    typer.echo(str(path))
