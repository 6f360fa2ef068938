"""Download and verify LLM Foundry's ICL benchmark files: the script twin of
``llmfoundry eval download-data`` (same options, same function).

    python scripts/eval/download_eval_data.py --suite v0.3
    python scripts/eval/download_eval_data.py --source /path/to/llm-foundry-checkout --dest eval/local_data
"""

import typer

from llmfoundry.cli.eval_cli import download_data

if __name__ == "__main__":
    typer.run(download_data)
