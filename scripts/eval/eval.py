"""Evaluate models on ICL tasks and eval loaders: ``python scripts/eval/eval.py <yaml> [key=value ...]``.

Several processes (``composer -n 2 scripts/eval/eval.py ...``) split every task between them.

The same command as ``llmfoundry eval``; its flags and logic live in
``llmfoundry/cli/commands/eval.py``.
"""

import sys

from llmfoundry.cli.commands.eval import evaluate
from llmfoundry.cli.commands.eval import main as run

main = evaluate  # main(yaml_path, overrides): evaluate and print the tables, as it always did

if __name__ == "__main__":
    sys.exit(run())
