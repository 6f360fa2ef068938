"""Merge a peft LoRA adapter into its base model and save a standalone Hugging Face folder."""

import argparse
import sys

from llmfoundry.command_utils.merge_lora import merge_lora
from llmfoundry.utils.cli_utils import parse_bool, run_user_command


def main(args: argparse.Namespace) -> None:
    """Merge and report where the folder was written."""
    out = merge_lora(
        args.base, args.adapter, args.output, args.output_precision, args.trust_remote_code
    )
    print(f"merged model written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="base model folder or hub name")
    parser.add_argument("--adapter", required=True, help="folder written by peft save_pretrained")
    parser.add_argument("--output", required=True, help="the merged model folder to write")
    parser.add_argument("--output_precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument(
        "--trust_remote_code", type=parse_bool, nargs="?", const=True, default=False
    )
    sys.exit(run_user_command(main, parser.parse_args()))
