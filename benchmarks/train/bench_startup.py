"""Start-up time of ``import llmfoundry``, the ``llmfoundry`` command and every script's ``--help``.

Each command runs ``--repeats`` times as a fresh process; the table shows the median wall time.
With ``--foundry_python`` (an LLM Foundry venv's python) its ``import llmfoundry`` is timed too,
interleaved with ours.

    python benchmarks/train/bench_startup.py --repeats 5
    python benchmarks/train/bench_startup.py --foundry_python <venv>/bin/python
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = (
    "scripts/data_prep/convert_dataset_json.py",
    "scripts/data_prep/convert_text_to_mds.py",
    "scripts/data_prep/convert_dataset_hf.py",
    "scripts/data_prep/convert_finetuning_dataset.py",
    "scripts/train/train.py",
    "scripts/eval/eval.py",
    "scripts/inference/convert_composer_to_hf.py",
    "scripts/inference/hf_generate.py",
)


def timed(command: list[str], cwd: Path) -> float:
    """Seconds one run of ``command`` in ``cwd`` takes (it must succeed)."""
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Time every command and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--foundry_python", help="LLM Foundry venv's python, to compare with")
    args = parser.parse_args(argv)
    python = sys.executable
    cli = str(Path(python).with_name("llmfoundry"))
    commands = {
        "python -c 'import llmfoundry'": [python, "-c", "import llmfoundry"],
        "llmfoundry --help": [cli, "--help"],
        **{f"{script} --help": [python, script, "--help"] for script in SCRIPTS},
    }
    if args.foundry_python:
        commands["LLM Foundry: python -c 'import llmfoundry'"] = [
            args.foundry_python, "-c", "import llmfoundry"
        ]  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in commands}
    # LLM Foundry's python runs outside the checkout, where ``import llmfoundry`` finds its own.
    outside = Path(tempfile.gettempdir())
    for _ in range(args.repeats):
        for name, command in commands.items():
            times[name].append(timed(command, outside if name.startswith("LLM") else REPO))
    print(f"\nmedian of {args.repeats} fresh processes\n")
    print("| command | seconds |\n| --- | --- |")
    for name, values in times.items():
        print(f"| `{name}` | {statistics.median(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
