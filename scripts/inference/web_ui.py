"""Try a model folder in the browser: a Generate tab and a Chat tab (Gradio, works offline).

python scripts/inference/web_ui.py --name_or_path path/to/hf_folder [--adapter lora_folder]

The same command as ``llmfoundry web-ui``; its flags and logic live in
``llmfoundry/cli/commands/web_ui.py``.
"""

import sys

from llmfoundry.cli.commands.web_ui import main

if __name__ == "__main__":
    sys.exit(main())
