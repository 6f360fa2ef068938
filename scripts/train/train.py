"""Train a model from a YAML run config: ``composer scripts/train/train.py <yaml> [key=value ...]``."""

import sys

from llmfoundry.command_utils.train import train_from_yaml
from llmfoundry.utils.cli_utils import run_user_command

USAGE = "usage: composer scripts/train/train.py <yaml> [key=value ...]"

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    sys.exit(run_user_command(train_from_yaml, sys.argv[1], sys.argv[2:]))
