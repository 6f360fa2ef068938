"""Merge a peft LoRA adapter into its base model and save a standalone Hugging Face folder."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import add_converter_flags, command_parser
from llmfoundry.utils.cli_utils import run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--base", required=True, help="base model folder or hub name")
    add("--adapter", required=True, help="folder written by peft save_pretrained")
    add("--output", required=True, help="the merged model folder to write")
    add("--output_precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    add_converter_flags(parser, "trust_remote_code")


build_parser = command_parser(__doc__, _add_flags)


def merge(args: argparse.Namespace) -> None:
    """Merge and report where the folder was written."""
    from llmfoundry.command_utils.merge_lora import merge_lora

    out = merge_lora(
        args.base, args.adapter, args.output, args.output_precision, args.trust_remote_code
    )
    print(f"merged model written to {out}")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and merge; returns the exit code."""
    return run_user_command(merge, build_parser(prog).parse_args(argv))
