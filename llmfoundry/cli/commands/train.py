"""Train a model from a YAML run config. Several processes: composer -n 2 scripts/train/train.py
<yaml> [key=value ...].
"""

from __future__ import annotations

from collections.abc import Sequence

from llmfoundry.cli.argparsing import add_yaml_arguments, check_yaml_and_overrides, command_parser
from llmfoundry.utils.cli_utils import run_user_command

build_parser = command_parser(__doc__, add_yaml_arguments)


def train(yaml_path: str, overrides: Sequence[str]) -> None:
    """Load the YAML with its overrides and train."""
    check_yaml_and_overrides(yaml_path, overrides)
    from llmfoundry.command_utils.train import train_from_yaml

    train_from_yaml(yaml_path, overrides)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and train; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    return run_user_command(train, args.yaml_path, args.overrides)
