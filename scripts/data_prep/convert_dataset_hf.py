"""Convert a Hugging Face dataset (Hub name or local files) to MDS; see ``--help``."""

import argparse
import sys
from pathlib import Path

try:
    import llmfoundry  # noqa: F401
except ImportError:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmfoundry.command_utils.data_prep.convert_dataset_hf import convert_dataset_hf
from llmfoundry.utils.cli_utils import run_user_command

parser = argparse.ArgumentParser(description="Convert a Hugging Face dataset to MDS, by split.")
parser.add_argument(
    "--dataset", required=True, help="c4, allenai/c4, the_pile, a Hub name, a local path, or json"
)
parser.add_argument(
    "--data_subset", help="subset (config) name; presets: en for c4, all for the_pile"
)
parser.add_argument(
    "--splits",
    nargs="+",
    help="splits to write (presets: train train_small val val_small val_xsmall; others: train)",
)
parser.add_argument("--out_root", required=True, help="output folder; one sub-folder per split")
parser.add_argument("--compression", default=None, help="shard compression, e.g. zstd")
parser.add_argument(
    "--concat_tokens", type=int, help="tokenize and concatenate into this many tokens"
)
parser.add_argument(
    "--tokenizer", help="tokenizer folder or hub name (needed with --concat_tokens)"
)
parser.add_argument(
    "--tokenizer_kwargs", help="tokenizer options as JSON, e.g. '{\"use_fast\": true}'"
)
parser.add_argument("--bos_text", default="", help="text put before each document")
parser.add_argument("--eos_text", default="", help="text put after each document")
parser.add_argument(
    "--no_wrap", action="store_true", help="drop a document's tokens past one sample"
)
parser.add_argument(
    "--num_workers", type=int, help="reader processes (default: one per CPU; 0: none)"
)
parser.add_argument("--text_column", help="column holding the text (default: text)")
parser.add_argument("--data_files", nargs="+", help="data files for a builder name such as json")
parser.add_argument(
    "--skip_bad_rows", action="store_true", help="skip rows without string text (counted)"
)

if __name__ == "__main__":
    sys.exit(run_user_command(convert_dataset_hf, **vars(parser.parse_args())))
