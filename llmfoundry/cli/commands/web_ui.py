"""``web_ui``: try a model folder in the browser (Gradio: a Generate tab and a Chat tab)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llmfoundry.cli.argparsing import accept_both_spellings
from llmfoundry.cli.generate_flags import MODEL_DTYPE_NAMES
from llmfoundry.utils.cli_utils import parse_bool, run_user_command

DESCRIPTION = """Try a model folder in the browser: a Generate tab and a Chat tab (Gradio, works offline).

python scripts/inference/web_ui.py --name_or_path path/to/hf_folder [--adapter lora_folder]
"""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's flags; ``--host`` and ``--max_new_tokens_limit`` left out are left out
    of the namespace, so that :func:`~llmfoundry.inference.web_ui.serve_web_ui`'s
    defaults apply."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add = parser.add_argument
    add("--name_or_path", required=True, help="model folder or hub name")
    add("--adapter", default=None, help="a peft LoRA adapter folder to apply")
    add("--trust_remote_code", type=parse_bool, nargs="?", const=True, default=False)
    add("--model_dtype", default="fp32", choices=list(MODEL_DTYPE_NAMES))
    add("--device", default=None, help="default: cuda if available, else cpu")
    add("--host", default=argparse.SUPPRESS, help="0.0.0.0 exposes the page")
    add("--port", type=int, default=None, help="default (or 0): a free port")
    add("--max_new_tokens_limit", type=int, default=argparse.SUPPRESS)
    add("--seed", type=int, default=42)
    return accept_both_spellings(parser)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and serve the page; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    from llmfoundry.inference.web_ui import serve_web_ui

    return run_user_command(serve_web_ui, **vars(args))
