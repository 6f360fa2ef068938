"""Serve a Hugging Face model folder behind an OpenAI-compatible HTTP endpoint.

    python scripts/inference/serve.py --name_or_path path/to/hf_folder --trust_remote_code

Endpoints: /health, /v1/models, /v1/completions, /v1/chat/completions (see
``llmfoundry/inference/serve.py``).

The same command as ``llmfoundry serve``; its flags and logic live in
``llmfoundry/cli/commands/serve.py``.
"""

import sys

from llmfoundry.cli.commands.serve import main

if __name__ == "__main__":
    sys.exit(main())
