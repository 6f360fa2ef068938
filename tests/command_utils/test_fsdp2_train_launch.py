"""``composer -n 2 scripts/train/train.py`` with FSDP2 FULL_SHARD on CPU (gloo) does the same
optimisation as one process on the same YAML: the global batch is split over the ranks, the
sharded model trains, and the per-batch losses and final weights match the 1-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmfoundry.utils.run_artifacts import read_metrics
from tests.command_utils.tiny_models import composer_launcher

from .conftest import TRAIN_SCRIPT, checkpoint_weights, write_run_yaml

BATCHES = 6
# fp32 on CPU; gradients reduced in a different order over 2 ranks, so equal up to rounding.
TOLERANCE = 2e-4


def train(command: list[str], cwd: Path) -> None:
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=500, cwd=cwd, env=environment
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def train_losses(save_folder: Path) -> list[float]:
    points = [p for p in read_metrics(save_folder) if p.metric == "loss/train/total"]
    return [p.value for p in sorted(points, key=lambda p: p.step)]


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_fsdp2_full_shard_two_processes_match_one(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    overrides = [
        f"max_duration={BATCHES}ba",
        "eval_loader=null",
        "precision=fp32",
        f"save_interval={BATCHES}ba",
        # Same samples in every global batch whatever the process count.
        "train_loader.dataset.num_canonical_nodes=1",
        # The key bias's gradient is zero in exact arithmetic (softmax ignores a per-query
        # constant), so Adam would amplify rounding noise there into lr-sized steps.
        "model.no_bias=true",
    ]
    folders = {}
    for name, launch in (
        ("single", [sys.executable]),
        ("fsdp2", [composer_launcher(), "-n", "2"]),
    ):
        run_dir = tmp_path / name
        run_dir.mkdir()
        folders[name] = run_dir / "ck"
        yaml_path = write_run_yaml(run_dir, mds_dir, tokenizer_dir, folders[name])
        extra = (
            ["fsdp_config={sharding_strategy: FULL_SHARD, state_dict_type: full}"]
            if name == "fsdp2"
            else []
        )
        train([*launch, str(TRAIN_SCRIPT), str(yaml_path), *overrides, *extra], run_dir)

    single, sharded = train_losses(folders["single"]), train_losses(folders["fsdp2"])
    assert len(single) == len(sharded) == BATCHES
    torch.testing.assert_close(torch.tensor(sharded), torch.tensor(single), rtol=TOLERANCE, atol=0)
    assert single[-1] < single[0] - 0.1, "the runs trained"

    expected = checkpoint_weights(folders["single"] / "latest-rank0.pt")
    got = checkpoint_weights(folders["fsdp2"] / "latest-rank0.pt")
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-3, atol=1e-4, msg=key)
    assert not any("bias" in key and "norm" not in key for key in expected)
