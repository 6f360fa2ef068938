"""Export a Hugging Face causal LM folder to ONNX (dynamic batch and sequence), checked with
onnxruntime.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from llmfoundry.cli.argparsing import BooleanFlag, command_parser
from llmfoundry.cli.generate_flags import add_dataclass_flags, flag_names
from llmfoundry.inference.options import ModelSource
from llmfoundry.utils.cli_utils import run_user_command


def _add_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(*flag_names("pretrained_model_name_or_path"), required=True)
    add(*flag_names("output_folder"), required=True)
    add(*flag_names("export_batch_size"), type=int, default=8)
    add(*flag_names("max_seq_len"), type=int, default=None)
    add(*flag_names("dtype"), default="fp32", choices=["fp32", "fp16", "bf16"])
    add(*flag_names("export_format"), default="onnx", choices=["onnx"])
    add(*flag_names("from_pretrained_kwargs"), default="", help="JSON object")
    # As hf_generate's: --trust_remote_code [true|false], --use_auth_token [TOKEN|true|false].
    add_dataclass_flags(
        parser, ModelSource, only=("trust_remote_code", "use_auth_token", "revision")
    )
    add(*flag_names("verify_export"), action=BooleanFlag, default=True)


build_parser = command_parser(__doc__, _add_flags)


def export(args: argparse.Namespace) -> None:
    """Export, then say where the model went and how close onnxruntime came to PyTorch."""
    from llmfoundry.command_utils.convert_hf_to_onnx import convert_hf_to_onnx

    options = vars(args)
    token = options.pop("use_auth_token")
    from_pretrained_kwargs = json.loads(options.pop("from_pretrained_kwargs") or "{}")
    if token is not None:
        from_pretrained_kwargs["token"] = token
    result = convert_hf_to_onnx(**options, from_pretrained_kwargs=from_pretrained_kwargs)
    print(f"ONNX model written to {result.onnx_path}")
    if result.max_abs_diff is not None:
        print(f"onnxruntime vs PyTorch: max |logit difference| {result.max_abs_diff:.3g}")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and export; returns the exit code."""
    return run_user_command(export, build_parser(prog).parse_args(argv))
