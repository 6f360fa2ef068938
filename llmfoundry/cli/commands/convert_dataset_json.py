"""``convert_dataset_json``: JSON-lines files (rows with a ``text`` field) to MDS."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import accept_both_spellings, add_converter_flags
from llmfoundry.utils.cli_utils import run_user_command

DESCRIPTION = "Convert JSON-lines files with a 'text' field to MDS."


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's flags (LLM Foundry's names)."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add = parser.add_argument
    add("--path", required=True, help="a JSON-lines file or a folder of them")
    add_converter_flags(
        parser,
        "out_root",
        out_root={"help": "output folder for the MDS files (e.g. my-data/train)"},
    )
    add("--split", default="train", help="input split to read (JSON-lines: train)")
    add_converter_flags(
        parser,
        "concat_tokens",
        "tokenizer",
        "bos_text",
        "eos_text",
        "no_wrap",
        "compression",
        "num_workers",
        "skip_bad_rows",
        skip_bad_rows={
            "help": "skip rows that are not UTF-8 JSON objects with a string 'text' field "
            "(counted in the summary)"
        },
    )
    return accept_both_spellings(parser)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and convert; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json

    return run_user_command(convert_dataset_json, **vars(args))
