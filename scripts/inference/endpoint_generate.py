"""Send a file of prompts to an OpenAI-compatible endpoint and write the completions as JSONL.

    python scripts/inference/endpoint_generate.py --prompts prompts.txt \\
        --endpoint http://127.0.0.1:8000/v1/completions --output out.jsonl --parallel 8

Exits with status 2 if any prompt failed (its line in the output carries the error).

The same command as ``llmfoundry endpoint-generate``; its flags and logic live in
``llmfoundry/cli/commands/endpoint_generate.py``.
"""

import sys

from llmfoundry.cli.commands.endpoint_generate import main

if __name__ == "__main__":
    sys.exit(main())
