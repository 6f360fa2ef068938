"""Serve a Hugging Face model folder behind an OpenAI-compatible HTTP endpoint.

    python scripts/inference/serve.py --name_or_path path/to/hf_folder --trust_remote_code

Endpoints: /health, /v1/models, /v1/completions, /v1/chat/completions (see
``llmfoundry/inference/serve.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import BooleanFlag, command_parser
from llmfoundry.cli.generate_flags import add_model_flags, take_model_source
from llmfoundry.utils.cli_utils import run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    """The command's flags: the model flags, then the endpoint's. An endpoint flag left out is
    left out of the namespace too, so that :class:`~llmfoundry.inference.serve.ServeConfig`
    supplies its default."""
    add = parser.add_argument
    add_model_flags(parser, without=("autocast_dtype",), aliases={"name_or_path": ["--model_path"]})
    add("--model_name", help="name requests use (default: the folder's name)")
    add("--host")
    add("--port", type=int, help="0 picks a free port")
    add("--max_batch_size", type=int)
    add("--batch_wait_ms", type=float)
    add("--max_new_tokens_limit", type=int)
    add("--request_timeout", type=float, help="seconds")
    add("--max_prompts_per_request", type=int)
    add("--max_queue", type=int, help="most prompts waiting to run; more get 429 (default 256)")
    add(
        "--api_key",
        help="require 'Authorization: Bearer <key>' on every route but /health "
        "(default: $LLMFOUNDRY_API_KEY; none: open)",
    )
    add("--access_log", action=BooleanFlag)


build_parser = command_parser(
    __doc__,
    _add_flags,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    argument_default=argparse.SUPPRESS,
)


def run_server(args: argparse.Namespace) -> None:
    """Serve until interrupted; print the URL once the address is bound."""
    from llmfoundry.inference.serve import ServeConfig, resolve_api_key, serve

    source = take_model_source(args)
    settings = vars(args)
    settings["api_key"] = resolve_api_key(settings.get("api_key"))
    config = ServeConfig(source, **settings)
    serve(
        config, on_ready=lambda url: print(f"serving '{config.served_name}' on {url}", flush=True)
    )


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and serve; returns the exit code."""
    return run_user_command(run_server, build_parser(prog).parse_args(argv))
