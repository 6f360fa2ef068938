"""Convert a Composer checkpoint (MPT, any HF causal LM, LoRA; a .pt file or a sharded folder) into a Hugging Face folder."""

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
        merge_lora=args.merge_lora,
        base_model=args.base_model,
        trust_remote_code=args.trust_remote_code,
        hf_repo_for_upload=args.hf_repo_for_upload,
        test_uploaded_model=args.test_uploaded_model,
    )
    print(f"Hugging Face model written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--composer_path",
        required=True,
        help="Composer checkpoint: a .pt file or a sharded checkpoint folder (path or URI)",
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
    parser.add_argument(
        "--merge_lora",
        action="store_true",
        help="for a LoRA checkpoint, write the base model with the adapter merged in",
    )
    parser.add_argument(
        "--base_model",
        default=None,
        help="LoRA base model folder or Hub id, when the checkpoint holds only the adapter",
    )
    parser.add_argument(
        "--hf_repo_for_upload", default=None, help="also push the folder to this Hub repo"
    )
    parser.add_argument(
        "--test_uploaded_model",
        action="store_true",
        help="load the uploaded repo back and generate a few tokens",
    )
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="run the code a tokenizer or model ships (an MPT export needs it to load)",
    )
    sys.exit(run_user_command(main, parser.parse_args()))
