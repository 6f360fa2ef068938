"""Export a Hugging Face causal LM folder to ONNX (dynamic batch and sequence), checked with onnxruntime."""

import argparse
import json
import sys

from llmfoundry.command_utils.convert_hf_to_onnx import convert_hf_to_onnx
from llmfoundry.utils.cli_utils import run_user_command


def main(args: argparse.Namespace) -> None:
    """Export, then say where the model went and how close onnxruntime came to PyTorch."""
    result = convert_hf_to_onnx(
        args.pretrained_model_name_or_path,
        args.output_folder,
        export_batch_size=args.export_batch_size,
        max_seq_len=args.max_seq_len,
        dtype=args.dtype,
        export_format=args.export_format,
        trust_remote_code=args.trust_remote_code,
        from_pretrained_kwargs=json.loads(args.from_pretrained_kwargs or "{}"),
        verify_export=args.verify_export,
    )
    print(f"ONNX model written to {result.onnx_path}")
    if result.max_abs_diff is not None:
        print(f"onnxruntime vs PyTorch: max |logit difference| {result.max_abs_diff:.3g}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pretrained_model_name_or_path", required=True)
    parser.add_argument("--output_folder", required=True)
    parser.add_argument("--export_batch_size", type=int, default=8)
    parser.add_argument("--max_seq_len", type=int, default=None)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--export_format", default="onnx", choices=["onnx"])
    parser.add_argument("--from_pretrained_kwargs", default="", help="JSON object")
    parser.add_argument("--trust_remote_code", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--verify_export", action=argparse.BooleanOptionalAction, default=True)
    sys.exit(run_user_command(main, parser.parse_args()))
