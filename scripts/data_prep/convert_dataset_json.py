"""Convert JSON-lines files (rows with a ``text`` field) to MDS; see ``--help``.

The same command as ``llmfoundry data_prep convert_dataset_json``; its flags and logic live in
``llmfoundry/cli/commands/convert_dataset_json.py``.
"""

import sys

from llmfoundry.cli.commands.convert_dataset_json import main

if __name__ == "__main__":
    sys.exit(main())
