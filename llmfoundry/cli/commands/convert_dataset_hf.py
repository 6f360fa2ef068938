"""``convert_dataset_hf``: a Hugging Face dataset (Hub name or local files) to MDS, by split."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import NameList, accept_both_spellings
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
    add("--data_subset", help="subset (config) name; presets: en for c4, all for the_pile")
    add(
        "--splits",
        nargs="+",
        action=NameList,
        help="splits to write (presets: train train_small val val_small val_xsmall; others: train)",
    )
    add("--out_root", required=True, help="output folder; one sub-folder per split")
    add("--compression", default=None, help="shard compression, e.g. zstd")
    add("--concat_tokens", type=int, help="tokenize and concatenate into this many tokens")
    add("--tokenizer", help="tokenizer folder or hub name (needed with --concat_tokens)")
    add("--tokenizer_kwargs", help="tokenizer options as JSON, e.g. '{\"use_fast\": true}'")
    add("--bos_text", default="", help="text put before each document")
    add("--eos_text", default="", help="text put after each document")
    add("--no_wrap", action="store_true", help="drop a document's tokens past one sample")
    add(
        "--num_workers",
        type=int,
        help="processes that tokenize (default: one per CPU core; 0 or 1: in this process)",
    )
    add("--text_column", help="column holding the text (default: text)")
    add(
        "--data_files",
        nargs="+",
        action=NameList,
        help="data files for a builder name such as json",
    )
    add("--skip_bad_rows", action="store_true", help="skip rows without string text (counted)")
    return accept_both_spellings(parser)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and convert; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    from llmfoundry.command_utils.data_prep.convert_dataset_hf import convert_dataset_hf

    return run_user_command(convert_dataset_hf, **vars(args))
