"""``train``: train a model from a YAML run config with ``key=value`` overrides."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.utils.cli_utils import run_user_command

DESCRIPTION = (
    "Train a model from a YAML run config. Several processes: "
    "composer -n 2 scripts/train/train.py <yaml> [key=value ...]."
)


def add_yaml_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the run config and its overrides (the ``train`` and ``eval`` commands' arguments)."""
    parser.add_argument("yaml_path", metavar="yaml", help="the run config (a YAML file)")
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="key=value",
        help="settings that replace the YAML's (dotted keys: model.n_layers=2)",
    )
    return parser


def check_yaml_and_overrides(yaml_path: str, overrides: Sequence[str]) -> None:
    """Fail in one line on a missing or unparsable YAML or a malformed override, before the
    run's heavy imports (torch, Composer) take their seconds."""
    from llmfoundry.utils.config_utils import load_yaml_with_overrides

    load_yaml_with_overrides(yaml_path, overrides)


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
