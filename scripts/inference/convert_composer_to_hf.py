"""Convert a Composer checkpoint (MPT, any HF causal LM, LoRA; a .pt file or a sharded folder) into a Hugging Face folder.

The same command as ``llmfoundry convert composer-to-hf``; its flags and logic live in
``llmfoundry/cli/commands/convert_composer_to_hf.py``.
"""

import sys

from llmfoundry.cli.commands.convert_composer_to_hf import main

if __name__ == "__main__":
    sys.exit(main())
