"""Convert JSON-lines files with a 'text' field to MDS."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import add_converter_flags, command_parser
from llmfoundry.utils.cli_utils import run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
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


build_parser = command_parser(__doc__, _add_flags)


def main(
    argv: Sequence[str] | None = None, prog: str | None = None, compression: str | None = None
) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and convert; returns the exit code.
    ``compression`` is the default of ``--compression``."""
    parser = build_parser(prog)
    parser.set_defaults(compression=compression)
    args = parser.parse_args(argv)
    from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json

    return run_user_command(convert_dataset_json, **vars(args))


def cli_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``llmfoundry data_prep convert_dataset_json``: :func:`main` with zstd shards by default,
    as LLM Foundry's command writes them (its script, like ours, writes uncompressed ones)."""
    return main(argv, prog, compression="zstd")
