"""Send prompts to an OpenAI-compatible endpoint and write the completions.

Our form: a prompts file in, one JSON line per prompt out (exits with status 2 if any failed)::

    python scripts/inference/endpoint_generate.py --prompts prompts.txt \\
        --endpoint http://127.0.0.1:8000/v1/completions --output out.jsonl --parallel 8

LLM Foundry's form: prompts and file::path files in, a CSV (batch,prompt,output) out::

    python scripts/inference/endpoint_generate.py -i "Hello" file::prompts.txt -o out.csv \\
        -e http://127.0.0.1:8000/v1/completions --batch-size 10 --rate-limit 75
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmfoundry.cli.argparsing import command_parser
from llmfoundry.utils.cli_utils import run_user_command
from llmfoundry.utils.exceptions import ConfigError, UserError

if TYPE_CHECKING:
    from llmfoundry.inference.client import EndpointSummary

# The flags of each form alone (dest names).
JSONL_FORM = ("prompts_file", "output", "chat")
CSV_FORM = ("inputs", "output_folder", "top_k", "top_p", "batch_size", "rate_limit")


def _add_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--prompts", dest="prompts_file", default=None, help=".txt or .jsonl (our form)")
    add(
        "-i",
        "--inputs",
        nargs="+",
        default=None,
        help="prompts, file::path and s3:// files (LF form)",
    )
    add("--prompt_delimiter", default="\n", help="splits a file:: prompt file (LF form)")
    add("-e", "--endpoint", default=None, help="completions URL (LF form default: $ENDPOINT_URL)")
    add("--output", default=None, help="JSONL file to write (our form)")
    add("-o", "--output_folder", default=None, help="CSV file, or s3:// folder (LF form)")
    add("--model", default=None, help="default: the model the server lists (LF form: none)")
    add("--chat", action="store_true", help="use /v1/chat/completions (our form)")
    add("--max_tokens", type=int, default=None, help="default 64 (LF form: 100)")
    add("--temperature", type=float, default=None, help="default 0 (LF form: 1.0)")
    add("--top_k", type=int, default=None, help="LF form, default 50")
    add("--top_p", type=float, default=None, help="LF form, default 1.0")
    add("--batch_size", type=int, default=None, help="prompts per request (LF form, default 10)")
    add("--rate_limit", type=float, default=None, help="requests per second (LF form, default 75)")
    add("--parallel", type=int, default=4, help="requests in flight at once")
    add("--retries", type=int, default=3)
    add("--backoff_s", type=float, default=0.5)
    add("--timeout_s", type=float, default=300.0)
    add("--api_key", default=None, help="our form: a bearer token; LF form: $ENDPOINT_API_KEY")


build_parser = command_parser(
    __doc__, _add_flags, formatter_class=argparse.RawDescriptionHelpFormatter
)


def _given(options: dict[str, Any], names: Sequence[str]) -> list[str]:
    return [name for name in names if options.get(name) not in (None, False)]


def _query_jsonl(options: dict[str, Any]) -> EndpointSummary:
    """Our form: ``--prompts``, ``--endpoint`` and ``--output``."""
    from llmfoundry.inference.client import generate_from_endpoint

    for name, flag in (
        ("prompts_file", "--prompts"),
        ("endpoint", "--endpoint"),
        ("output", "--output"),
    ):
        if options[name] is None:
            raise ConfigError(f"{flag} is required (or use LLM Foundry's form: -i ... -o ...)")
    lf_only = _given(options, CSV_FORM[2:])
    if lf_only:
        raise ConfigError(f"--{lf_only[0]} applies to LLM Foundry's form (-i ... -o ...) only")
    for name, default in (("max_tokens", 64), ("temperature", 0.0)):
        options[name] = default if options[name] is None else options[name]
    for name in (*CSV_FORM, "prompt_delimiter"):
        options.pop(name)
    return generate_from_endpoint(**options)


def _query_csv(options: dict[str, Any]) -> EndpointSummary:
    """LLM Foundry's form: ``-i``, ``-o`` and ``-e`` (or ``$ENDPOINT_URL``)."""
    from llmfoundry.inference.endpoint_batches import BatchedQuery, generate_csv_from_endpoint

    if options["inputs"] is None or options["output_folder"] is None:
        raise ConfigError("LLM Foundry's form needs both -i/--inputs and -o/--output-folder")
    settings = {
        name: options[name]
        for name in ("max_tokens", "temperature", "top_k", "top_p", "batch_size", "rate_limit")
        if options[name] is not None
    }
    query = BatchedQuery(
        **settings,
        model=options["model"],
        parallel=options["parallel"],
        retries=options["retries"],
        backoff_s=options["backoff_s"],
        timeout_s=options["timeout_s"],
    )
    return generate_csv_from_endpoint(
        options["inputs"],
        options["output_folder"],
        options["endpoint"],
        options["prompt_delimiter"],
        query,
        api_key=options["api_key"],
    )


def query(args: argparse.Namespace) -> None:
    """Query the endpoint for every prompt, write the results and print a summary line.

    Raises:
        ConfigError: on flags of both forms at once.
        UserError: if any prompt failed.
    """
    options = vars(args)
    ours, theirs = _given(options, JSONL_FORM), _given(options, CSV_FORM[:2])
    if ours and theirs:
        raise ConfigError(
            f"--{ours[0]} (our JSON-lines form) and --{theirs[0]} (LLM Foundry's CSV form) do "
            "not go together; use one form"
        )
    summary = _query_csv(options) if theirs else _query_jsonl(options)
    print(summary.line(), flush=True)
    if summary.failed:
        where = "their 'output' is empty in" if theirs else "see the 'error' field in"
        raise UserError(
            f"{summary.failed} of {len(summary.results)} prompts failed; {where} {summary.output}"
        )


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and query; returns the exit code."""
    return run_user_command(query, build_parser(prog).parse_args(argv))
