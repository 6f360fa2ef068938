"""Chat with a Hugging Face model in the terminal (commands: clear, history, quit/exit).

The same command as ``llmfoundry chat``; its flags and logic live in
``llmfoundry/cli/commands/hf_chat.py``.
"""

import sys
from pathlib import Path

try:
    import llmfoundry  # noqa: F401
except ImportError:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmfoundry.cli.commands.hf_chat import main

if __name__ == "__main__":
    sys.exit(main())
