"""Convert a Hugging Face dataset to MDS, by split."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import add_converter_flags, command_parser
from llmfoundry.utils.cli_utils import run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    splits_help = (
        "splits to write (presets: train train_small val val_small val_xsmall; others: train)"
    )
    add_converter_flags(
        parser,
        "dataset",
        "data_subset",
        "splits",
        "out_root",
        "compression",
        "concat_tokens",
        "tokenizer",
        "tokenizer_kwargs",
        "bos_text",
        "eos_text",
        "no_wrap",
        "num_workers",
        dataset={"help": "c4, allenai/c4, the_pile, a Hub name, a local path, or json"},
        data_subset={"help": "subset (config) name; presets: en for c4, all for the_pile"},
        splits={"help": splits_help},
    )
    parser.add_argument("--text_column", help="column holding the text (default: text)")
    add_converter_flags(
        parser,
        "data_files",
        "skip_bad_rows",
        skip_bad_rows={"help": "skip rows without string text (counted)"},
    )


build_parser = command_parser(__doc__, _add_flags)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and convert; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    from llmfoundry.command_utils.data_prep.convert_dataset_hf import convert_dataset_hf

    return run_user_command(convert_dataset_hf, **vars(args))
