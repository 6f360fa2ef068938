"""Convert finetuning examples (prompt/response or chats) to MDS; see ``--help``.

The same command as ``llmfoundry data_prep convert_finetuning_dataset``; its flags and logic live in
``llmfoundry/cli/commands/convert_finetuning_dataset.py``.
"""

import sys

from llmfoundry.cli.commands.convert_finetuning_dataset import main

if __name__ == "__main__":
    sys.exit(main())
