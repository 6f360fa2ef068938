"""Send a file of prompts to an OpenAI-compatible endpoint and write the completions as JSONL.

    python scripts/inference/endpoint_generate.py --prompts prompts.txt \\
        --endpoint http://127.0.0.1:8000/v1/completions --output out.jsonl --parallel 8

Exits with status 2 if any prompt failed (its line in the output carries the error).
"""

import argparse
import sys

from llmfoundry.command_utils.endpoint_client import generate_from_endpoint
from llmfoundry.utils.cli_utils import run_user_command
from llmfoundry.utils.exceptions import UserError


def main(args: argparse.Namespace) -> None:
    """Query the endpoint for every prompt, write the results and print a summary line."""
    summary = generate_from_endpoint(**vars(args))
    print(summary.line(), flush=True)
    if summary.failed:
        raise UserError(
            f"{summary.failed} of {len(summary.results)} prompts failed; "
            f"see the 'error' field in {summary.output}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", dest="prompts_file", required=True, help=".txt or .jsonl")
    parser.add_argument("--endpoint", required=True, help="completions URL or the server's URL")
    parser.add_argument("--output", required=True, help="JSONL file to write")
    parser.add_argument("--model", default=None, help="default: the model the server lists")
    parser.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--parallel", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--backoff_s", type=float, default=0.5)
    parser.add_argument("--timeout_s", type=float, default=300.0)
    parser.add_argument("--api_key", default=None)
    sys.exit(run_user_command(main, parser.parse_args()))
