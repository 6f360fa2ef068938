"""Generate text from a Hugging Face model folder or hub name (optionally with a LoRA adapter)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import command_parser
from llmfoundry.cli.generate_flags import (
    add_model_flags,
    add_sampling_flags,
    flag_names,
    take_model_source,
    take_sampling,
    take_sweep,
)
from llmfoundry.utils.cli_utils import parse_bool, run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    """The sampling flags take several values: one run for each combination."""
    add_model_flags(parser)
    add_sampling_flags(parser, do_sample=True, sweep=True)  # LLM Foundry samples by default
    add = parser.add_argument
    add(*flag_names("prompts", "-p"), nargs="+", default=["My name is"], help="text, or file::path")
    add(
        *flag_names("prompt_delimiter"),
        default=None,
        help="split file:: prompts at this string (default: a file is one prompt)",
    )
    add(*flag_names("max_batch_size"), type=int, default=None)
    add(*flag_names("warmup"), type=parse_bool, nargs="?", const=True, default=True)


build_parser = command_parser(__doc__, _add_flags)


def generate(args: argparse.Namespace) -> None:
    """Generate for every prompt and every combination of the swept flags' values; print each
    combination's settings, each prompt with its continuation and each batch's speed."""
    from llmfoundry.inference.generate import generate_sweep

    sweep = take_sweep(args)
    sampling = take_sampling(args)
    source = take_model_source(args)
    for point in generate_sweep(source, sampling=sampling, sweep=sweep, **vars(args)):
        settings = ", ".join(f"{name}={value}" for name, value in point.settings.items())
        print(f"settings: {settings}")
        run = point.run
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


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and generate; returns the exit code."""
    return run_user_command(generate, build_parser(prog).parse_args(argv))
