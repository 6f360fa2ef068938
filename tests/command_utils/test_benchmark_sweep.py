"""``benchmarks/train/sweep.py --tiny``: LLM Foundry's benchmark columns, on CPU."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from tests import REPO

SWEEP = REPO / "benchmarks" / "train" / "sweep.py"
# LLM Foundry's published benchmark table, in its order.
FOUNDRY_COLUMNS = [
    "Model", "SeqLen", "#GPUs", "GPU", "MFU", "HFU", "Model TFLOP", "MicroBatchSize",
    "GradAccum", "GlobalBatchSize", "Throughput S/s", "T/s", "T/s/GPU", "Precision",
    "Sharding", "Act. ckpt", "NumParams",
]  # fmt: skip


@pytest.mark.slow
def test_tiny_sweep_writes_foundry_columns_and_keeps_going_after_a_failure(
    tmp_path: Path,
) -> None:
    command = [
        sys.executable, str(SWEEP), "--tiny", "--batches", "3", "--window", "2",
        "--out_dir", str(tmp_path), "--variant", "stock:",
        "--variant", "broken:model.attn_config.attn_impl=nonsense",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    with (tmp_path / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    assert [column for column in header if column in FOUNDRY_COLUMNS] == FOUNDRY_COLUMNS
    stock, broken = rows
    expected_params = sum(
        p.numel()
        for p in MPTForCausalLM(
            MPTConfig(d_model=64, n_heads=2, n_layers=2, vocab_size=512, max_seq_len=128)
        ).parameters()
    )
    assert {key: stock[key] for key in ("Model", "Variant", "SeqLen", "#GPUs", "GPU")} == {
        "Model": "MPT-125M", "Variant": "stock", "SeqLen": "128", "#GPUs": "1", "GPU": "cpu",
    }  # fmt: skip
    assert (stock["MicroBatchSize"], stock["GradAccum"], stock["GlobalBatchSize"]) == (
        "2",
        "1",
        "2",
    )
    assert (stock["Precision"], stock["Sharding"], stock["Act. ckpt"]) == ("fp32", "none", "False")
    assert int(stock["NumParams"]) == expected_params
    samples_per_sec = float(stock["Throughput S/s"])
    assert samples_per_sec > 0
    assert abs(int(stock["T/s"]) - samples_per_sec * 128) <= 128 * 0.005 + 1
    assert stock["T/s/GPU"] == stock["T/s"]
    assert stock["MFU"] == stock["HFU"] == ""  # no peak FLOP/s known for a CPU
    first, last = (float(value) for value in stock["Loss first/last"].split("/"))
    assert first > 0 and last > 0
    assert stock["Error"] == ""
    assert broken["Variant"] == "broken" and broken["Throughput S/s"] == ""
    assert broken["Error"].startswith("exit ") and "broken.log" in broken["Error"]
    assert (tmp_path / "sweep.md").read_text().count("| MPT-125M |") == 2
