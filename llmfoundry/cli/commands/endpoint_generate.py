"""Send a file of prompts to an OpenAI-compatible endpoint and write the completions as JSONL.

    python scripts/inference/endpoint_generate.py --prompts prompts.txt \\
        --endpoint http://127.0.0.1:8000/v1/completions --output out.jsonl --parallel 8

Exits with status 2 if any prompt failed (its line in the output carries the error).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import command_parser
from llmfoundry.utils.cli_utils import run_user_command
from llmfoundry.utils.exceptions import UserError


def _add_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--prompts", dest="prompts_file", required=True, help=".txt or .jsonl")
    add("--endpoint", required=True, help="completions URL or the server's URL")
    add("--output", required=True, help="JSONL file to write")
    add("--model", default=None, help="default: the model the server lists")
    add("--chat", action="store_true", help="use /v1/chat/completions")
    add("--max_tokens", type=int, default=64)
    add("--temperature", type=float, default=0.0)
    add("--parallel", type=int, default=4, help="requests in flight at once")
    add("--retries", type=int, default=3)
    add("--backoff_s", type=float, default=0.5)
    add("--timeout_s", type=float, default=300.0)
    add("--api_key", default=None)


build_parser = command_parser(
    __doc__, _add_flags, formatter_class=argparse.RawDescriptionHelpFormatter
)


def query(args: argparse.Namespace) -> None:
    """Query the endpoint for every prompt, write the results and print a summary line.

    Raises:
        UserError: if any prompt failed.
    """
    from llmfoundry.inference.client import generate_from_endpoint

    summary = generate_from_endpoint(**vars(args))
    print(summary.line(), flush=True)
    if summary.failed:
        raise UserError(
            f"{summary.failed} of {len(summary.results)} prompts failed; "
            f"see the 'error' field in {summary.output}"
        )


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and query; returns the exit code."""
    return run_user_command(query, build_parser(prog).parse_args(argv))
