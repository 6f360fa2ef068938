"""Export a Hugging Face causal LM folder to ONNX (dynamic batch and sequence), checked with onnxruntime.

The same command as ``llmfoundry convert hf-to-onnx``; its flags and logic live in
``llmfoundry/cli/commands/convert_hf_to_onnx.py``.
"""

import sys
from pathlib import Path

try:
    import llmfoundry  # noqa: F401
except ImportError:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmfoundry.cli.commands.convert_hf_to_onnx import main

if __name__ == "__main__":
    sys.exit(main())
