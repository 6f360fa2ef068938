"""Try a model folder in the browser: a Generate tab and a Chat tab (Gradio, works offline).

python scripts/inference/web_ui.py --name_or_path path/to/hf_folder [--adapter lora_folder]
"""

import argparse
import sys

from llmfoundry.command_utils.generate import MODEL_DTYPES
from llmfoundry.command_utils.web_ui import (
    DEFAULT_HOST,
    DEFAULT_MAX_NEW_TOKENS_LIMIT,
    serve_web_ui,
)
from llmfoundry.utils.cli_utils import parse_bool, run_user_command

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name_or_path", required=True, help="model folder or hub name")
    parser.add_argument("--adapter", default=None, help="a peft LoRA adapter folder to apply")
    parser.add_argument(
        "--trust_remote_code", type=parse_bool, nargs="?", const=True, default=False
    )
    parser.add_argument("--model_dtype", default="fp32", choices=list(MODEL_DTYPES))
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--host", default=DEFAULT_HOST, help="0.0.0.0 exposes the page")
    parser.add_argument("--port", type=int, default=None, help="default (or 0): a free port")
    parser.add_argument("--max_new_tokens_limit", type=int, default=DEFAULT_MAX_NEW_TOKENS_LIMIT)
    parser.add_argument("--seed", type=int, default=42)
    sys.exit(run_user_command(serve_web_ui, **vars(parser.parse_args())))
