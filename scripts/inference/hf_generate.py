"""Generate text from a Hugging Face model folder or hub name."""

import argparse
import sys

from llmfoundry.command_utils.generate import generate, load_model_and_tokenizer, read_prompts
from llmfoundry.utils.cli_utils import run_user_command


def main(args: argparse.Namespace) -> None:
    """Load the model, generate for every prompt, print prompt and continuation."""
    import torch

    torch.manual_seed(args.seed)
    model, tokenizer = load_model_and_tokenizer(
        args.name_or_path, args.trust_remote_code, args.model_dtype, args.device
    )
    sampling = (
        {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
        if args.do_sample
        else {}
    )
    generations = generate(
        model,
        tokenizer,
        read_prompts(args.prompts),
        args.max_new_tokens,
        do_sample=args.do_sample,
        use_cache=args.use_cache,
        **sampling,
    )
    for generation in generations:
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
