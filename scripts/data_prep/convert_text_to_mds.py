"""Convert a folder of ``*.txt`` files to concatenated-token MDS; see ``--help``."""

import argparse
import os
import sys
from pathlib import Path

try:
    import llmfoundry  # noqa: F401
except ImportError:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmfoundry.command_utils.data_prep.convert_text_to_mds import (
    convert_text_to_mds,
    parse_logging_level,
)
from llmfoundry.utils.cli_utils import configure_script_logging, parse_bool, run_user_command

parser = argparse.ArgumentParser(
    description="Convert a folder of *.txt files to MDS. Either folder may be an s3://, gs:// or "
    "oci:// URI: remote input is downloaded to a temporary folder ($TMPDIR) first; remote output "
    "is written there and uploaded when done, its done-marker last."
)
parser.add_argument(
    "--input_folder", required=True, help="local folder or URI, searched recursively for *.txt"
)
parser.add_argument("--output_folder", required=True, help="local folder or URI for the MDS")
parser.add_argument("--compression", default="zstd", help="shard compression (default: zstd)")
parser.add_argument("--concat_tokens", type=int, required=True, help="tokens per sample")
parser.add_argument("--tokenizer", dest="tokenizer_name", required=True, help="folder or hub name")
parser.add_argument("--bos_text", default="", help="text put before each document")
parser.add_argument("--eos_text", default="", help="text put after each document")
parser.add_argument(
    "--use_tokenizer_eos", action="store_true", help="use the tokenizer's EOS as eos_text"
)
parser.add_argument(
    "--no_wrap", action="store_true", help="drop a document's tokens past one sample"
)
parser.add_argument("--processes", type=int, default=min(max((os.cpu_count() or 1) - 2, 1), 32))
parser.add_argument(
    "--reprocess",
    type=parse_bool,
    nargs="?",
    const=True,
    default=False,
    help="redo a finished or different conversion, deleting the output folder's contents "
    "(a remote one's only once the new conversion is ready to upload)",
)
parser.add_argument(
    "--trust-remote-code",
    "--trust_remote_code",
    dest="trust_remote_code",
    type=parse_bool,
    nargs="?",
    const=True,
    default=False,
    help="let the tokenizer run the Python code its folder ships (default: false)",
)
parser.add_argument(
    "--logging-level",
    "--logging_level",
    dest="logging_level",
    type=parse_logging_level,
    default="INFO",
    help="the script's logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)",
)

if __name__ == "__main__":
    options = vars(parser.parse_args())
    configure_script_logging(options.pop("logging_level"))
    sys.exit(run_user_command(convert_text_to_mds, **options))
