"""``convert_dataset_json``: JSON-lines files (rows with a ``text`` field) to MDS."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import accept_both_spellings
from llmfoundry.utils.cli_utils import run_user_command

DESCRIPTION = "Convert JSON-lines files with a 'text' field to MDS."


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's flags (LLM Foundry's names)."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add = parser.add_argument
    add("--path", required=True, help="a JSON-lines file or a folder of them")
    add("--out_root", required=True, help="output folder for the MDS files (e.g. my-data/train)")
    add("--split", default="train", help="input split to read (JSON-lines: train)")
    add("--concat_tokens", type=int, help="tokenize and concatenate into this many tokens")
    add("--tokenizer", help="tokenizer folder or hub name (needed with --concat_tokens)")
    add("--bos_text", default="", help="text put before each document")
    add("--eos_text", default="", help="text put after each document")
    add("--no_wrap", action="store_true", help="drop a document's tokens past one sample")
    add("--compression", default=None, help="shard compression, e.g. zstd")
    add(
        "--num_workers",
        type=int,
        default=None,
        help="processes that tokenize (default: one per CPU core; 0 or 1: in this process)",
    )
    add(
        "--skip_bad_rows",
        action="store_true",
        help="skip rows that are not UTF-8 JSON objects with a string 'text' field (counted in the summary)",
    )
    return accept_both_spellings(parser)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and convert; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json

    return run_user_command(convert_dataset_json, **vars(args))
