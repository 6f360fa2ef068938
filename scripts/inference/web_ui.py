"""Try a model folder in the browser: a Generate tab and a Chat tab (Gradio, works offline).

python scripts/inference/web_ui.py --name_or_path path/to/hf_folder [--adapter lora_folder]

The same command as ``llmfoundry web-ui``; its flags and logic live in
``llmfoundry/cli/commands/web_ui.py``.
"""

import sys
from pathlib import Path

try:
    import llmfoundry  # noqa: F401
except ImportError:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmfoundry.cli.commands.web_ui import main

if __name__ == "__main__":
    sys.exit(main())
