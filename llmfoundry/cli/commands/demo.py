"""The end-to-end demo on CPU, offline: corpus -> tokenizer -> MDS -> train -> eval -> export ->
generate.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import command_parser
from llmfoundry.utils.cli_utils import run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--out_dir", default="demo_out")
    add("--max_duration", default="500ba", help="training length, e.g. 500ba")


build_parser = command_parser(__doc__, _add_flags)


def run(args: argparse.Namespace) -> None:
    """Run the demo and print what it measured and where everything went."""
    from llmfoundry.command_utils.demo import run_demo
    from llmfoundry.command_utils.eval import render_tables

    result = run_demo(args.out_dir, max_duration=args.max_duration)
    print(
        f"\ntrain loss: {result.first_train_loss:.3f} (first batch) -> "
        f"{result.last_train_loss:.3f} (last batch)"
    )
    if result.eval_loss is not None:
        print(f"eval loss on held-out files: {result.eval_loss:.3f}")
    for name, path in [
        ("text corpus", result.out_dir / "text"),
        ("tokenizer", result.tokenizer_dir),
        ("MDS data", result.mds_dir),
        ("Composer checkpoint", result.checkpoint),
        ("Hugging Face export", result.hf_dir),
        *(("eval results", path) for path in result.evaluation.files),
    ]:
        print(f"{name:>20}: {path}")
    for text in result.generations:
        print("-" * 60 + "\n" + text)
    print("-" * 60 + "\nthe sample ICL tasks (scripts/eval/yamls/demo.yaml):\n")
    print(render_tables(result.evaluation))


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the demo; returns the exit code."""
    return run_user_command(run, build_parser(prog).parse_args(argv))
