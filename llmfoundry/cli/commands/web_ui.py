"""Try a model folder in the browser: a Generate tab and a Chat tab (Gradio, works offline).

python scripts/inference/web_ui.py --name_or_path path/to/hf_folder [--adapter lora_folder]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import command_parser
from llmfoundry.cli.generate_flags import add_model_flags, add_sampling_flags, take_model_source
from llmfoundry.utils.cli_utils import run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    """The command's flags; ``--host`` and ``--max_new_tokens_limit`` left out are left out
    of the namespace, so that :func:`~llmfoundry.inference.web_ui.serve_web_ui`'s
    defaults apply."""
    add = parser.add_argument
    add_model_flags(parser, without=("autocast_dtype",))
    add("--host", default=argparse.SUPPRESS, help="0.0.0.0 exposes the page")
    add("--port", type=int, default=None, help="default (or 0): a free port")
    add("--max_new_tokens_limit", type=int, default=argparse.SUPPRESS)
    add_sampling_flags(parser, only=("seed",))


build_parser = command_parser(__doc__, _add_flags)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and serve the page; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    from llmfoundry.inference.web_ui import serve_web_ui

    return run_user_command(serve_web_ui, take_model_source(args), **vars(args))
