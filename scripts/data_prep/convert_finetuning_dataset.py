"""Convert finetuning examples (prompt/response or chats) to MDS; see ``--help``."""

import argparse
import sys
from pathlib import Path

try:
    import llmfoundry  # noqa: F401
except ImportError:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmfoundry.command_utils.data_prep.convert_finetuning_dataset import (
    convert_finetuning_dataset,
)
from llmfoundry.utils.cli_utils import parse_bool, run_user_command

parser = argparse.ArgumentParser(
    description="Convert a finetuning dataset to MDS: tokenized turns with --tokenizer, else "
    "the text (prompt/response or messages)."
)
parser.add_argument(
    "--dataset",
    required=True,
    help="a Hub name, a local dataset folder, a .jsonl file, a folder of <split>.jsonl files, "
    "or json with --data_files",
)
parser.add_argument("--data_subset", help="subset (config) name, if the dataset has several")
parser.add_argument(
    "--splits", nargs="+", help="splits to convert (default: train validation, where present)"
)
parser.add_argument(
    "--preprocessor",
    help="preprocessing function: package.module:function or a registered name "
    "(default: the one registered for --dataset)",
)
parser.add_argument(
    "--skip-preprocessing",
    "--skip_preprocessing",
    dest="skip_preprocessing",
    action="store_true",
    help="use the rows as they are (prompt/response or messages)",
)
parser.add_argument("--data_files", nargs="+", help="data files for a builder name such as json")
parser.add_argument("--out_root", required=True, help="output folder; one sub-folder per split")
parser.add_argument("--local", help="local cache folder when --out_root is remote")
parser.add_argument("--compression", default=None, help="shard compression, e.g. zstd")
parser.add_argument(
    "--num_workers", type=int, help="reader processes (default: one per CPU; 0: none)"
)
parser.add_argument(
    "--tokenizer", help="tokenizer folder or hub name (default: write the examples as text)"
)
parser.add_argument(
    "--tokenizer_kwargs", help="tokenizer options as JSON, e.g. '{\"use_fast\": true}'"
)
parser.add_argument(
    "--max_seq_len",
    type=int,
    default=2048,
    help="drop tokenized examples with no target within this many tokens (default 2048)",
)
parser.add_argument(
    "--target_prompts",
    "--target-prompts",
    default="none",
    help="prompts that count as targets when deciding which examples to keep: none, all or "
    "length>=N (default none)",
)
parser.add_argument(
    "--target_responses",
    "--target-responses",
    default="last",
    help="responses that count as targets: last or all (default last)",
)
parser.add_argument(
    "--encoder_decoder",
    "--encoder-decoder",
    type=parse_bool,
    nargs="?",
    const=True,
    default=False,
    help="the data is for an encoder-decoder model: keep every example (needs the default targets)",
)
parser.add_argument(
    "--skip_bad_rows",
    "--skip-bad-rows",
    dest="skip_bad_rows",
    action="store_true",
    help="skip malformed rows (counted in the summary)",
)

if __name__ == "__main__":
    sys.exit(run_user_command(convert_finetuning_dataset, **vars(parser.parse_args())))
