"""``init_device: meta`` with FSDP2 on 2 CPU processes: each process builds and initializes only
its shards, and the gathered weights equal, bit for bit, a 1-process ``init_device: cpu`` build
with the same seed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from .tiny_models import composer_launcher, run_with_repo_on_path

RUN_SCRIPT = Path(__file__).with_name("meta_init_run.py")


def _rank_shares(state: dict[str, torch.Tensor]) -> list[int]:
    """Elements each of 2 ranks holds when every parameter is split along dim 0 (torch.chunk)."""
    shares = [0, 0]
    for tensor in state.values():
        rows, per_row = tensor.shape[0], tensor[0].numel()
        shares[0] += -(-rows // 2) * per_row
        shares[1] += rows // 2 * per_row
    return shares


def _largest_module(state: dict[str, torch.Tensor]) -> int:
    """Elements of the module with the most parameters of its own."""
    per_module: dict[str, int] = {}
    for name, tensor in state.items():
        module = name.rsplit(".", 1)[0]
        per_module[module] = per_module.get(module, 0) + tensor.numel()
    return max(per_module.values())


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_meta_init_builds_only_shards_and_matches_a_cpu_build(tmp_path: Path) -> None:
    run_with_repo_on_path(
        [composer_launcher(), "-n", "2", str(RUN_SCRIPT), "sharded", "sharded.pt"], tmp_path
    )
    run_with_repo_on_path([sys.executable, str(RUN_SCRIPT), "single", "single.pt"], tmp_path)
    sharded = torch.load(tmp_path / "sharded.pt")
    single = torch.load(tmp_path / "single.pt")
    ranks: list[dict[str, Any]] = torch.load(tmp_path / "sharded.pt.facts", weights_only=False)

    assert sorted(sharded) == sorted(single) and len(single) == 41
    for name, value in single.items():
        assert torch.equal(sharded[name], value), name

    total = sum(t.numel() for t in single.values())
    modules_with_params = len({name.rsplit(".", 1)[0] for name in single})
    assert _rank_shares(single) == [r["local_numel"] for r in ranks]
    for facts in ranks:
        assert facts["kept_on_meta"], "the model was built on meta, not materialized"
        assert facts["all_dtensor_cpu"] and facts["total_numel"] == total
        assert facts["optimizer_has_shards"], "the optimizer holds the sharded parameters"
        # Only Composer's per-module materialization of shards, never a whole-model to_empty.
        assert len(facts["to_empty"]) == modules_with_params
        assert all(recurse is False for _, recurse in facts["to_empty"])
        # Every parameter drawn whole once, one module at a time (at most the embedding).
        assert facts["sliced"] == len(single)
        assert facts["transient"] == _largest_module(single) == 257 * 36
