"""``convert_dataset_hf``: a Hugging Face dataset (Hub name or local files) to MDS, by split."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import NameList, accept_both_spellings, add_converter_flags
from llmfoundry.utils.cli_utils import run_user_command

DESCRIPTION = "Convert a Hugging Face dataset to MDS, by split."


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's flags (LLM Foundry's names)."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add = parser.add_argument
    add(
        "--dataset",
        required=True,
        help="c4, allenai/c4, the_pile, a Hub name, a local path, or json",
    )
    add_converter_flags(
        parser,
        "data_subset",
        data_subset={"help": "subset (config) name; presets: en for c4, all for the_pile"},
    )
    add(
        "--splits",
        nargs="+",
        action=NameList,
        help="splits to write (presets: train train_small val val_small val_xsmall; others: train)",
    )
    add_converter_flags(
        parser,
        "out_root",
        "compression",
        "concat_tokens",
        "tokenizer",
        "tokenizer_kwargs",
        "bos_text",
        "eos_text",
        "no_wrap",
        "num_workers",
    )
    add("--text_column", help="column holding the text (default: text)")
    add_converter_flags(
        parser,
        "data_files",
        "skip_bad_rows",
        skip_bad_rows={"help": "skip rows without string text (counted)"},
    )
    return accept_both_spellings(parser)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and convert; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    from llmfoundry.command_utils.data_prep.convert_dataset_hf import convert_dataset_hf

    return run_user_command(convert_dataset_hf, **vars(args))
