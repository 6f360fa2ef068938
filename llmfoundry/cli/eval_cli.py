"""``llmfoundry eval``: evaluate from a YAML run config, or fetch the benchmark files.

* ``llmfoundry eval <yaml> [key=value ...]``: what ``scripts/eval/eval.py`` does (the first
  argument is routed to the hidden ``run`` command when it looks like a YAML);
* ``llmfoundry eval download-data``: fetch the standard task lists' benchmark files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmfoundry.cli.commands import eval as eval_command
from llmfoundry.cli.pass_through import QuickHelpCommand, YamlRoutingGroup, add_pass_through

FAILED_EXIT_CODE = 1

app = typer.Typer(
    cls=YamlRoutingGroup,
    no_args_is_help=True,
    subcommand_metavar="<yaml> [key=value ...] | COMMAND [ARGS]...",
    help="Evaluate models on ICL tasks and eval loaders: llmfoundry eval <yaml> [key=value ...] "
    "(llmfoundry eval <yaml> --help lists the arguments); or fetch the benchmark files "
    "(download-data).",
    short_help="Evaluate models from a YAML run config; download-data: fetch benchmarks.",
)
add_pass_through(
    app,
    YamlRoutingGroup.RUN_COMMAND,
    eval_command.main,
    help="Evaluate from a YAML run config.",
    stands_for_group=True,
)


@app.command("download-data", cls=QuickHelpCommand)
def download_data(
    suite: Annotated[
        str,
        typer.Option(
            help="The task list whose files to fetch: v0.1, v0.2, v0.3 "
            "(scripts/eval/yamls/tasks_<suite>.yaml), or all (every file of the manifest)."
        ),
    ] = "all",
    dest: Annotated[
        Path | None,
        typer.Option(
            help="The local_data folder that receives <category>/<name>.jsonl.",
            show_default="scripts/eval/local_data when ./scripts/eval exists, else eval/local_data",
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="Where to fetch from: an http(s) URL prefix (each manifest path, "
            "scripts/eval/local_data/..., is appended), or a local folder holding either a mirror "
            "of LLM Foundry's repository (scripts/eval/local_data/...) or a local_data folder "
            "(<category>/<name>.jsonl).",
            show_default="LLM Foundry's raw files at the manifest's pinned commit",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Fetch again even files already present and valid.")
    ] = False,
    jobs: Annotated[int, typer.Option(min=1, help="Files fetched at once (threads).")] = 4,
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="The manifest TSV (path, size, git blob id, suites).",
            show_default="the packaged llmfoundry/eval/data/manifest.tsv",
        ),
    ] = None,
) -> None:
    """Download and verify LLM Foundry's ICL benchmark files (reruns skip valid files).

    Exit code 0 when all are present and valid, 1 when some failed (named on stderr), 2 on misuse.
    """
    from llmfoundry.eval.download import download_eval_data
    from llmfoundry.utils.cli_utils import USER_ERROR_EXIT_CODE, one_line
    from llmfoundry.utils.exceptions import UserError

    try:
        report = download_eval_data(
            suite=suite, dest=dest, source=source, force=force, jobs=jobs, manifest_path=manifest
        )
    except UserError as err:
        typer.echo(f"error: {one_line(err)}", err=True)
        raise typer.Exit(code=USER_ERROR_EXIT_CODE) from None
    for failure in report.with_status("failed"):
        typer.echo(f"error: {one_line(failure.error)}", err=True)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(code=FAILED_EXIT_CODE)
