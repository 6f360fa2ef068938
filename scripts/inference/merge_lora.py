"""Merge a peft LoRA adapter into its base model and save a standalone Hugging Face folder.

The same command as ``llmfoundry merge-lora``; its flags and logic live in
``llmfoundry/cli/commands/merge_lora.py``.
"""

import sys

from llmfoundry.cli.commands.merge_lora import main

if __name__ == "__main__":
    sys.exit(main())
