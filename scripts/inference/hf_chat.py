"""Chat with a Hugging Face model in the terminal (commands: clear, history, quit/exit).

The same command as ``llmfoundry chat``; its flags and logic live in
``llmfoundry/cli/commands/hf_chat.py``.
"""

import sys

from llmfoundry.cli.commands.hf_chat import main

if __name__ == "__main__":
    sys.exit(main())
