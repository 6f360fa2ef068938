"""Convert a Hugging Face dataset (Hub name or local files) to MDS; see ``--help``.

The same command as ``llmfoundry data_prep convert_dataset_hf``; its flags and logic live in
``llmfoundry/cli/commands/convert_dataset_hf.py``.
"""

import sys

from llmfoundry.cli.commands.convert_dataset_hf import main

if __name__ == "__main__":
    sys.exit(main())
