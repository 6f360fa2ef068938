"""``train``: train a model from a YAML run config with ``key=value`` overrides."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import add_yaml_arguments, check_yaml_and_overrides
from llmfoundry.utils.cli_utils import run_user_command

DESCRIPTION = (
    "Train a model from a YAML run config. Several processes: "
    "composer -n 2 scripts/train/train.py <yaml> [key=value ...]."
)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's arguments: the YAML and its overrides."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    return add_yaml_arguments(parser)


def train(yaml_path: str, overrides: Sequence[str]) -> None:
    """Load the YAML with its overrides and train."""
    check_yaml_and_overrides(yaml_path, overrides)
    from llmfoundry.command_utils.train import train_from_yaml

    train_from_yaml(yaml_path, overrides)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and train; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    return run_user_command(train, args.yaml_path, args.overrides)
