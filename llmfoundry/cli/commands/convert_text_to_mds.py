"""Convert a folder of *.txt files to MDS. Either folder may be an s3://, gs:// or oci:// URI:
remote input is downloaded to a temporary folder ($TMPDIR) first; remote output is written there
and uploaded when done, its done-marker last.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import add_converter_flags, command_parser, parse_logging_level
from llmfoundry.utils.cli_utils import configure_script_logging, parse_bool, run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--input_folder", required=True, help="local folder or URI, searched recursively for *.txt")
    add("--output_folder", required=True, help="local folder or URI for the MDS")
    add_converter_flags(
        parser,
        "compression",
        "concat_tokens",
        "tokenizer",
        "bos_text",
        "eos_text",
        compression={"default": "zstd", "help": "shard compression (default: zstd)"},
        concat_tokens={"required": True, "help": "tokens per sample"},
        tokenizer={"dest": "tokenizer_name", "required": True, "help": "folder or hub name"},
    )
    add("--use_tokenizer_eos", action="store_true", help="use the tokenizer's EOS as eos_text")
    add_converter_flags(parser, "no_wrap")
    add(
        "--processes",
        type=int,
        default=None,
        help="processes that tokenize (default: one per usable CPU core; 1: in this process); "
        "the output is the same for any number",
    )
    add(
        "--reprocess",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="redo a finished or different conversion, deleting the output folder's contents "
        "(a remote one's only once the new conversion is ready to upload)",
    )
    add(
        "--trust-remote-code",
        "--trust_remote_code",
        dest="trust_remote_code",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="let the tokenizer run the Python code its folder ships (default: false)",
    )
    add(
        "--logging-level",
        "--logging_level",
        dest="logging_level",
        type=parse_logging_level,
        default="INFO",
        help="the script's logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)",
    )


build_parser = command_parser(__doc__, _add_flags)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), set the logging level and convert; returns
    the exit code."""
    options = vars(build_parser(prog).parse_args(argv))
    configure_script_logging(options.pop("logging_level"))
    from llmfoundry.command_utils.data_prep.convert_text_to_mds import convert_text_to_mds

    return run_user_command(convert_text_to_mds, **options)
