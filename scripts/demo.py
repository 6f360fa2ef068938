"""The end-to-end demo on CPU, offline: corpus -> tokenizer -> MDS -> train -> eval -> export -> generate.

The same command as ``llmfoundry demo``; its flags and logic live in
``llmfoundry/cli/commands/demo.py``.
"""

import sys

from llmfoundry.cli.commands.demo import main

if __name__ == "__main__":
    sys.exit(main())
