"""Serve a Hugging Face model folder behind an OpenAI-compatible HTTP endpoint.

    python scripts/inference/serve.py --name_or_path path/to/hf_folder --trust_remote_code

Endpoints: /health, /v1/models, /v1/completions, /v1/chat/completions (see
``llmfoundry/command_utils/serve.py``).
"""

import argparse
import sys

from llmfoundry.command_utils.serve import ServeConfig, serve
from llmfoundry.utils.cli_utils import run_user_command


def main(args: argparse.Namespace) -> None:
    """Serve until interrupted; print the URL once the address is bound."""
    config = ServeConfig(**vars(args))
    serve(
        config, on_ready=lambda url: print(f"serving '{config.served_name}' on {url}", flush=True)
    )


if __name__ == "__main__":
    defaults = ServeConfig(model_path="")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--name_or_path",
        "--model_path",
        dest="model_path",
        required=True,
        help="HF model folder (or hub name)",
    )
    parser.add_argument(
        "--model_name", default=None, help="name requests use (default: the folder's name)"
    )
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port, help="0 picks a free port")
    parser.add_argument("--max_batch_size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--batch_wait_ms", type=float, default=defaults.batch_wait_ms)
    parser.add_argument("--max_new_tokens_limit", type=int, default=defaults.max_new_tokens_limit)
    parser.add_argument(
        "--request_timeout", type=float, default=defaults.request_timeout, help="seconds"
    )
    parser.add_argument(
        "--max_prompts_per_request", type=int, default=defaults.max_prompts_per_request
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument(
        "--model_dtype", default=defaults.model_dtype, choices=["fp32", "fp16", "bf16"]
    )
    parser.add_argument("--trust_remote_code", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument(
        "--access_log", action=argparse.BooleanOptionalAction, default=defaults.access_log
    )
    sys.exit(run_user_command(main, parser.parse_args()))
