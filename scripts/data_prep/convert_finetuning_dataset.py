"""Convert finetuning examples (prompt/response or chats) to MDS; see ``--help``.

The same command as ``llmfoundry data_prep convert_finetuning_dataset``; its flags and logic live in
``llmfoundry/cli/commands/convert_finetuning_dataset.py``.
"""

import sys
from pathlib import Path

try:
    import llmfoundry  # noqa: F401
except ImportError:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmfoundry.cli.commands.convert_finetuning_dataset import main

if __name__ == "__main__":
    sys.exit(main())
