"""Evaluate models on ICL tasks and eval loaders: ``python scripts/eval/eval.py <yaml> [key=value ...]``.

Several processes (``composer -n 2 scripts/eval/eval.py ...``) split every task between them.
"""

import os
import sys

from llmfoundry.command_utils.eval import eval_from_yaml, render_tables
from llmfoundry.utils.cli_utils import run_user_command

USAGE = "usage: python scripts/eval/eval.py <yaml> [key=value ...]"


def main(yaml_path: str, overrides: list[str]) -> None:
    """Evaluate, then print the result tables once (from the first process)."""
    results = eval_from_yaml(yaml_path, overrides)
    if os.environ.get("RANK", "0") == "0":
        print(render_tables(results), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    sys.exit(run_user_command(main, sys.argv[1], sys.argv[2:]))
