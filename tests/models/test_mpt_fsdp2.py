"""FSDP2 on CPU (gloo) through Composer: sharded blocks, activation checkpointing and the fused
loss train exactly as one process does on the same global batches."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RUN_SCRIPT = Path(__file__).with_name("fsdp2_mpt_run.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _composer() -> str:
    launcher = Path(sys.executable).with_name("composer")
    return str(launcher) if launcher.exists() else shutil.which("composer") or "composer"


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=cwd, env=None)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_fsdp2_training_matches_single_process(tmp_path: Path) -> None:
    _run([_composer(), "-n", "2", str(RUN_SCRIPT), "fsdp2", str(tmp_path / "fsdp2.pt")], tmp_path)
    _run([sys.executable, str(RUN_SCRIPT), "single", str(tmp_path / "single.pt")], tmp_path)
    sharded = torch.load(tmp_path / "fsdp2.pt")
    single = torch.load(tmp_path / "single.pt")
    initial = torch.load(tmp_path / "single.pt.init")
    assert set(sharded) == set(single) and len(single) > 0
    for name, value in single.items():
        torch.testing.assert_close(sharded[name], value, atol=1e-5, rtol=1e-5, msg=name)
    moved = max((single[k] - initial[k]).abs().max().item() for k in single)
    assert moved > 1e-2, "the runs trained"
