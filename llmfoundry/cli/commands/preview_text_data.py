"""Print a few samples of an MDS text dataset (``python llmfoundry/data/text_data.py ...``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import command_parser
from llmfoundry.utils.cli_utils import run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--local_path", required=True, help="the local MDS folder")
    add("--remote_path", default=None, help="the remote MDS folder, if any")
    add("--split", default="val", help="the split sub-folder (default: val)")
    add("--tokenizer", default=None, help="decode samples with this tokenizer")
    add("--max_seq_len", type=int, default=32, help="truncate samples to this")


build_parser = command_parser("Print a few samples of an MDS text dataset.", _add_flags)


def preview(args: argparse.Namespace) -> None:
    """Print the samples, one header line and one text line each."""
    from llmfoundry.data.text_data import sample_texts

    for line in sample_texts(
        args.local_path, args.split, args.tokenizer, args.max_seq_len, args.remote_path
    ):
        print(line)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and print; returns the exit code."""
    return run_user_command(preview, build_parser(prog).parse_args(argv))
