"""Convert a Composer checkpoint (MPT, any HF causal LM, LoRA; a .pt file or a sharded folder) into
a Hugging Face folder.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import command_parser
from llmfoundry.utils.cli_utils import run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--composer_path",
        required=True,
        help="Composer checkpoint: a .pt file or a sharded checkpoint folder (path or URI)",
    )
    add(
        "--hf_output_path",
        required=True,
        help="folder to write: a local path, or an object-store URI (s3://, gs://, oci://) that "
        "the folder is uploaded to",
    )
    add("--local_checkpoint_save_location", default=None, help="keep a downloaded checkpoint here")
    add(
        "--output_precision",
        default="fp32",
        choices=["fp32", "fp16", "bf16", "float32", "float16", "bfloat16"],
    )
    add(
        "--merge_lora",
        action="store_true",
        help="for a LoRA checkpoint, write the base model with the adapter merged in",
    )
    add(
        "--base_model",
        default=None,
        help="LoRA base model folder or Hub id, when the checkpoint holds only the adapter",
    )
    add("--hf_repo_for_upload", default=None, help="also push the folder to this Hub repo")
    add(
        "--test_uploaded_model",
        action="store_true",
        help="load the uploaded repo back and generate a few tokens",
    )
    add(
        "--trust_remote_code",
        action="store_true",
        help="run the code a tokenizer or model ships (an MPT export needs it to load)",
    )


build_parser = command_parser(__doc__, _add_flags)


def convert(args: argparse.Namespace) -> None:
    """Convert (and upload, for an object-store ``--hf_output_path``), then say where the
    folder is."""
    from llmfoundry.command_utils.convert_composer_to_hf import convert_composer_to_hf_uri

    print(f"Hugging Face model written to {convert_composer_to_hf_uri(**vars(args))}")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and convert; returns the exit code."""
    return run_user_command(convert, build_parser(prog).parse_args(argv))
