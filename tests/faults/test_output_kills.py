"""SIGKILL while an HF export or an eval results file is written: the earlier output is left as
it was, nothing half-written appears under the output's name, and the same command again
writes what a clean run writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.command_utils.tiny_models import run_script

from .conftest import folder_bytes, run_killed

# Builds fixed results and writes them with write_results into the folder named by argv[1].
RESULTS_SCRIPT = """
import sys
from pathlib import Path

from llmfoundry.command_utils.eval_results import EvalResults, ModelResults, ResultRow

rows = [
    ResultRow("tiny", "icl", "lambada", "", 0, "InContextLearningLMAccuracy", 0.25),
    ResultRow("tiny", "lm", "c4", "", None, "LanguageCrossEntropy", 3.5),
]
results = EvalResults("fault-test", [ModelResults("tiny", rows, {})], [])
from llmfoundry.command_utils.eval_results import write_results

write_results(results, Path(sys.argv[1]), {"note": "n" * 4000})
"""


@pytest.mark.slow
def test_hf_export_killed_leaves_the_earlier_export_then_rerun(
    tmp_path: Path, clean_run: Path
) -> None:
    from llmfoundry.command_utils.convert_composer_to_hf import convert_composer_to_hf

    checkpoint = str(clean_run / "ep0-ba6-rank0.pt")
    earlier = str(clean_run / "ep0-ba2-rank0.pt")
    out = tmp_path / "hf"
    convert_composer_to_hf(earlier, str(out))
    before = folder_bytes(out)
    # The weights of the new export are on disk (in its staging folder) when the process dies.
    run_killed(
        "safetensors.torch:save_file",
        1,
        "after",
        "inference/convert_composer_to_hf.py",
        "--composer_path",
        checkpoint,
        "--hf_output_path",
        str(out),
        cwd=tmp_path,
    )
    assert folder_bytes(out) == before  # the earlier export, untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".hf")] != []

    convert_composer_to_hf(checkpoint, str(out))  # the same command, not killed
    clean = tmp_path / "clean"
    convert_composer_to_hf(checkpoint, str(clean))
    assert folder_bytes(out) == folder_bytes(clean)
    assert "model.safetensors" in folder_bytes(out) and "config.json" in folder_bytes(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "hf"]  # staging removed


@pytest.mark.slow
def test_eval_results_write_killed_then_rerun(tmp_path: Path) -> None:
    script = tmp_path / "write_results.py"
    script.write_text(RESULTS_SCRIPT)
    out = tmp_path / "results"
    # Call 1 writes results.csv; call 2, results.json, is cut in half when the process dies.
    run_killed("pathlib:Path.write_text", 2, "half", str(script), str(out), cwd=tmp_path)
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == ["results.csv"]  # whole; results.json never appeared half-written
    partial = [p for p in out.iterdir() if p.name.startswith(".results.partial-")]
    assert len(partial) == 1
    with pytest.raises(json.JSONDecodeError):
        json.loads(partial[0].read_text())

    clean = tmp_path / "clean"
    for folder in (out, clean):  # the same command again (in this process), and a clean one
        assert run_script(script, str(folder)).returncode == 0
    assert folder_bytes(out) == folder_bytes(clean)  # the rerun also removed the partial file
    assert sorted(folder_bytes(out)) == ["results.csv", "results.json"]
