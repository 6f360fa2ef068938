"""Convert JSON-lines files (rows with a ``text`` field) to MDS; see ``--help``."""

import argparse
import sys
from pathlib import Path

try:
    import llmfoundry  # noqa: F401
except ImportError:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json
from llmfoundry.utils.cli_utils import run_user_command

parser = argparse.ArgumentParser(description="Convert JSON-lines files with a 'text' field to MDS.")
parser.add_argument("--path", required=True, help="a JSON-lines file or a folder of them")
parser.add_argument(
    "--out_root", required=True, help="output folder for the MDS files (e.g. my-data/train)"
)
parser.add_argument("--split", default="train", help="input split to read (JSON-lines: train)")
parser.add_argument(
    "--concat_tokens", type=int, help="tokenize and concatenate into this many tokens"
)
parser.add_argument(
    "--tokenizer", help="tokenizer folder or hub name (needed with --concat_tokens)"
)
parser.add_argument("--bos_text", default="", help="text put before each document")
parser.add_argument("--eos_text", default="", help="text put after each document")
parser.add_argument(
    "--no_wrap", action="store_true", help="drop a document's tokens past one sample"
)
parser.add_argument("--compression", default=None, help="shard compression, e.g. zstd")
parser.add_argument(
    "--skip_bad_rows",
    action="store_true",
    help="skip rows that are not UTF-8 JSON objects with a string 'text' field (counted in the summary)",
)

if __name__ == "__main__":
    sys.exit(run_user_command(convert_dataset_json, **vars(parser.parse_args())))
