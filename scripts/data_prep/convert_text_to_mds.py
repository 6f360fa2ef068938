"""Convert a folder of ``*.txt`` files to concatenated-token MDS; see ``--help``.

The same command as ``llmfoundry data_prep convert_text_to_mds``; its flags and logic live in
``llmfoundry/cli/commands/convert_text_to_mds.py``.
"""

import sys

from llmfoundry.cli.commands.convert_text_to_mds import build_parser, main

parser = build_parser()  # importing the script builds its parser (tests read it)

if __name__ == "__main__":
    sys.exit(main())
