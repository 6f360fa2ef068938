"""FSDP2 on CPU (gloo) through Composer: sharded blocks, activation checkpointing and the fused
loss train exactly as one process does on the same global batches."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.command_utils.tiny_models import composer_launcher, run_with_repo_on_path

RUN_SCRIPT = Path(__file__).with_name("fsdp2_mpt_run.py")


def run_parallel_and_single(script: Path, mode: str, tmp_path: Path) -> tuple[Any, Any, Any]:
    """Run ``script`` in ``mode`` under ``composer -n 2``, then on one process; what each wrote,
    and the single run's untrained weights."""
    run_with_repo_on_path(
        [composer_launcher(), "-n", "2", str(script), mode, str(tmp_path / f"{mode}.pt")], tmp_path
    )
    run_with_repo_on_path(
        [sys.executable, str(script), "single", str(tmp_path / "single.pt")], tmp_path
    )
    parallel = torch.load(tmp_path / f"{mode}.pt")
    return parallel, torch.load(tmp_path / "single.pt"), torch.load(tmp_path / "single.pt.init")


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_fsdp2_training_matches_single_process(tmp_path: Path) -> None:
    sharded, single, initial = run_parallel_and_single(RUN_SCRIPT, "fsdp2", tmp_path)
    assert set(sharded) == set(single) and len(single) > 0
    for name, value in single.items():
        torch.testing.assert_close(sharded[name], value, atol=1e-5, rtol=1e-5, msg=name)
    moved = max((single[k] - initial[k]).abs().max().item() for k in single)
    assert moved > 1e-2, "the runs trained"
