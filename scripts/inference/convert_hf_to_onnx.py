"""Export a Hugging Face causal LM folder to ONNX (dynamic batch and sequence), checked with onnxruntime.

The same command as ``llmfoundry convert hf-to-onnx``; its flags and logic live in
``llmfoundry/cli/commands/convert_hf_to_onnx.py``.
"""

import sys

from llmfoundry.cli.commands.convert_hf_to_onnx import main

if __name__ == "__main__":
    sys.exit(main())
