"""Generate text from a Hugging Face model folder or hub name (optionally with a LoRA adapter).

The same command as ``llmfoundry generate``; its flags and logic live in
``llmfoundry/cli/commands/hf_generate.py``.
"""

import sys

from llmfoundry.cli.commands.hf_generate import main

if __name__ == "__main__":
    sys.exit(main())
