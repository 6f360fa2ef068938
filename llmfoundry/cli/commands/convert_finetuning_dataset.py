"""Convert a finetuning dataset to MDS: tokenized turns with --tokenizer, else the text
(prompt/response or messages).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import NameList, add_converter_flags, command_parser
from llmfoundry.utils.cli_utils import parse_bool, run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    dataset_help = (
        "a Hub name, a local dataset folder, a .jsonl file, a folder of <split>.jsonl files, "
        "or json with --data_files"
    )
    add_converter_flags(parser, "dataset", "data_subset", dataset={"help": dataset_help})
    add = parser.add_argument
    add(
        "--splits",
        nargs="+",
        action=NameList,
        help="splits to convert (default: train validation, where present)",
    )
    add(
        "--preprocessor",
        help="preprocessing function: package.module:function or a registered name "
        "(default: the one registered for --dataset)",
    )
    add(
        "--skip-preprocessing",
        "--skip_preprocessing",
        dest="skip_preprocessing",
        action="store_true",
        help="use the rows as they are (prompt/response or messages)",
    )
    add_converter_flags(parser, "data_files", "out_root")
    add("--local", help="local cache folder when --out_root is remote")
    add_converter_flags(
        parser,
        "compression",
        "num_workers",
        "tokenizer",
        "tokenizer_kwargs",
        tokenizer={"help": "tokenizer folder or hub name (default: write the examples as text)"},
    )
    add(
        "--max_seq_len",
        type=int,
        default=2048,
        help="drop tokenized examples with no target within this many tokens (default 2048)",
    )
    add(
        "--target_prompts",
        "--target-prompts",
        default="none",
        help="prompts that count as targets when deciding which examples to keep: none, all or "
        "length>=N (default none)",
    )
    add(
        "--target_responses",
        "--target-responses",
        default="last",
        help="responses that count as targets: last or all (default last)",
    )
    add(
        "--encoder_decoder",
        "--encoder-decoder",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="the data is for an encoder-decoder model: keep every example (needs the default "
        "targets)",
    )
    add_converter_flags(
        parser,
        "skip_bad_rows",
        skip_bad_rows={"help": "skip malformed rows (counted in the summary)"},
    )


build_parser = command_parser(__doc__, _add_flags)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and convert; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    from llmfoundry.command_utils.data_prep.convert_finetuning_dataset import (
        convert_finetuning_dataset,
    )

    return run_user_command(convert_finetuning_dataset, **vars(args))
