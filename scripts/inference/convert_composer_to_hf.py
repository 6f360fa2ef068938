"""Convert a Composer MPT checkpoint into a Hugging Face folder (loadable with trust_remote_code)."""

import argparse
import sys

from llmfoundry.command_utils.convert_composer_to_hf import convert_composer_to_hf
from llmfoundry.utils.cli_utils import run_user_command


def main(args: argparse.Namespace) -> None:
    """Convert, then say where the folder is."""
    out = convert_composer_to_hf(
        args.composer_path,
        args.hf_output_path,
        output_precision=args.output_precision,
        local_checkpoint_save_location=args.local_checkpoint_save_location,
    )
    print(f"Hugging Face model written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--composer_path", required=True, help="Composer .pt checkpoint (path or URI)"
    )
    parser.add_argument("--hf_output_path", required=True, help="folder to write")
    parser.add_argument(
        "--local_checkpoint_save_location", default=None, help="keep a downloaded checkpoint here"
    )
    parser.add_argument(
        "--output_precision",
        default="fp32",
        choices=["fp32", "fp16", "bf16", "float32", "float16", "bfloat16"],
    )
    sys.exit(run_user_command(main, parser.parse_args()))
