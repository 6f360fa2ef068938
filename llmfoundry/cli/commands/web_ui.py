"""``web_ui``: try a model folder in the browser (Gradio: a Generate tab and a Chat tab)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import accept_both_spellings
from llmfoundry.cli.generate_flags import add_model_flags, add_sampling_flags, take_model_source
from llmfoundry.utils.cli_utils import run_user_command

DESCRIPTION = """Try a model folder in the browser: a Generate tab and a Chat tab (Gradio, works offline).

python scripts/inference/web_ui.py --name_or_path path/to/hf_folder [--adapter lora_folder]
"""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's flags; ``--host`` and ``--max_new_tokens_limit`` left out are left out
    of the namespace, so that :func:`~llmfoundry.inference.web_ui.serve_web_ui`'s
    defaults apply."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_model_flags(parser, without=("autocast_dtype",))
    add = parser.add_argument
    add("--host", default=argparse.SUPPRESS, help="0.0.0.0 exposes the page")
    add("--port", type=int, default=None, help="default (or 0): a free port")
    add("--max_new_tokens_limit", type=int, default=argparse.SUPPRESS)
    add_sampling_flags(parser, only=("seed",))
    return accept_both_spellings(parser)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and serve the page; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    from llmfoundry.inference.web_ui import serve_web_ui

    return run_user_command(serve_web_ui, take_model_source(args), **vars(args))
