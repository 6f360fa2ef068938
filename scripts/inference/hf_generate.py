"""Generate text from a Hugging Face model folder or hub name."""

import argparse
import sys

from llmfoundry.command_utils.generate import generate_from_pretrained
from llmfoundry.utils.cli_utils import run_user_command


def main(args: argparse.Namespace) -> None:
    """Generate for every prompt and print prompt plus continuation."""
    for generation in generate_from_pretrained(**vars(args)):
        print("#" * 40)
        print(generation.prompt + generation.continuation)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name_or_path", required=True)
    parser.add_argument(
        "--prompts", nargs="+", default=["My name is"], help="prompts, or file::path"
    )
    parser.add_argument("--max_new_tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--do_sample", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--use_cache", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--model_dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trust_remote_code", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--seed", type=int, default=42)
    sys.exit(run_user_command(main, parser.parse_args()))
