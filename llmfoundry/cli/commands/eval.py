"""Evaluate models on ICL tasks and eval loaders from a YAML run config. Several processes
(composer -n 2 scripts/eval/eval.py <yaml> [key=value ...]) split every task between them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from llmfoundry.cli.argparsing import add_yaml_arguments, check_yaml_and_overrides, command_parser
from llmfoundry.utils.cli_utils import run_user_command

build_parser = command_parser(__doc__, add_yaml_arguments)


def evaluate(yaml_path: str, overrides: Sequence[str]) -> None:
    """Evaluate, then print the result tables once (from the first process)."""
    check_yaml_and_overrides(yaml_path, overrides)
    from llmfoundry.command_utils.eval import eval_from_yaml, render_tables

    results = eval_from_yaml(yaml_path, overrides)
    if os.environ.get("RANK", "0") == "0":
        print(render_tables(results), flush=True)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and evaluate; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    return run_user_command(evaluate, args.yaml_path, args.overrides)
