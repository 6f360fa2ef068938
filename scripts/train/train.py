"""Train a model from a YAML run config: ``composer scripts/train/train.py <yaml> [key=value ...]``.

The same command as ``llmfoundry train``; its flags and logic live in
``llmfoundry/cli/commands/train.py``.
"""

import sys

from llmfoundry.cli.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
