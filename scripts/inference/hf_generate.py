"""Generate text from a Hugging Face model folder or hub name (optionally with a LoRA adapter)."""

import argparse
import sys

from llmfoundry.command_utils.generate import (
    add_model_flags,
    add_sampling_flags,
    generate_from_pretrained,
)
from llmfoundry.utils.cli_utils import parse_bool, run_user_command


def main(args: argparse.Namespace) -> None:
    """Generate for every prompt; print each prompt with its continuation and each batch's speed."""
    run = generate_from_pretrained(**vars(args))
    for index, batch in enumerate(run.batches, start=1):
        for generation in batch.generations:
            print("#" * 40)
            print(generation.prompt + generation.continuation)
        print("#" * 40)
        print(
            f"batch {index}/{len(run.batches)}: {len(batch.generations)} prompts, "
            f"{batch.new_tokens} new tokens in {batch.latency_s:.3f} s "
            f"({batch.tokens_per_s:.1f} tokens/s)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_model_flags(parser)
    add_sampling_flags(parser)
    parser.add_argument("--prompts", nargs="+", default=["My name is"], help="text, or file::path")
    parser.add_argument("--max_batch_size", type=int, default=None)
    parser.add_argument("--warmup", type=parse_bool, nargs="?", const=True, default=True)
    sys.exit(run_user_command(main, parser.parse_args()))
