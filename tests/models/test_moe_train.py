"""The mixture-of-experts YAMLs train on CPU (``testing-moe.yaml`` as LLM Foundry ships it,
``dbrx-tiny-cpu.yaml``), logging the cross-entropy and the router losses apart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from llmfoundry.models.hf.composer_mpt import resolve_lbl_group
from llmfoundry.utils.config_utils import TrainConfig, load_config
from llmfoundry.utils.exceptions import ConfigError
from tests import REPO
from tests.command_utils.conftest import SEQ_LEN, mds_dir, train_in_memory

__all__ = ["mds_dir"]  # the command tests' fixture MDS, used here too

YAMLS = REPO / "scripts/train/yamls/pretrain"
# A few batches on CPU: smaller batches, no loader workers, and the warmup of the learning
# rate shortened so that 4 batches move the loss.
SMALL_RUN = [
    "max_duration=4ba",
    "global_train_batch_size=4",
    "device_train_microbatch_size=2",
    "device_eval_batch_size=4",
    "eval_subset_num_batches=1",
    "train_loader.num_workers=0",
    "eval_loader.num_workers=0",
    "scheduler.t_warmup=1ba",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, mds_dir: Path) -> Path:
    """The fixture MDS under the splits both YAMLs read (train/val, train_small/val_small)."""
    root = tmp_path_factory.mktemp("moe_data")
    for split in ("train", "val"):
        for name in (split, f"{split}_small"):
            shutil.copytree(mds_dir / split, root / name)
    return root


def _train(name: str, data_root: Path, *overrides: str) -> dict[str, list[float]]:
    """Train the pretraining YAML ``name`` for 4 batches on ``data_root``; every logged series."""
    local = [f"variables.data_local={data_root}", f"variables.max_seq_len={SEQ_LEN}"]
    cfg, resolved = load_config(YAMLS / name, [*local, *overrides, *SMALL_RUN], TrainConfig)
    _, memory, _ = train_in_memory(cfg, resolved, batches=4)
    return {key: [float(v) for _, v in rows] for key, rows in memory.data.items()}


def test_testing_moe_yaml_trains_on_cpu(data_root: Path, tokenizer_dir: Path) -> None:
    logged = _train("testing-moe.yaml", data_root, f"tokenizer.name={tokenizer_dir}")
    ce, lbl, total = logged["loss/train/loss"], logged["loss/train/lbl"], logged["loss/train/total"]
    assert ce[-1] < ce[0] - 0.05, ce
    assert all(value > 0 for value in lbl), lbl
    for t, c, b in zip(total, ce, lbl, strict=True):
        assert t == pytest.approx(c + b, rel=1e-6)
    assert "loss/train/zloss" not in logged  # moe_zloss_weight: 0
    assert len(logged["metrics/eval/LanguageCrossEntropy"]) == 1


def test_dbrx_style_yaml_trains_on_cpu(data_root: Path, tokenizer_dir: Path) -> None:
    logged = _train(
        "dbrx-tiny-cpu.yaml",
        data_root,
        f"variables.tokenizer_name={tokenizer_dir}",
        "callbacks.mbmoe_tok_per_expert.log_interval=2",
    )
    ce, lbl = logged["loss/train/loss"], logged["loss/train/lbl"]
    assert ce[-1] < ce[0] - 0.05, ce
    assert all(value > 0 for value in lbl), lbl
    # 8 experts, 2 per token: each normalized count is a share of the tokens, 2/8 on average.
    medians = logged["mb_moe/all_layers_median_tpe"]
    assert len(medians) == 2 and all(0 < m < 1 for m in medians)
    assert all(m >= 1 for m in logged["mb_moe/all_layers_max_over_mean_tpe"])


def test_lbl_process_group_names_resolve_to_groups(tmp_path: Path) -> None:
    assert resolve_lbl_group("global_group") is None  # no torch.distributed here
    if dist.is_initialized():
        pytest.skip("another test left torch.distributed initialized")
    init_method = f"file://{tmp_path / 'store'}"
    dist.init_process_group("gloo", init_method=init_method, rank=0, world_size=1)
    try:
        assert resolve_lbl_group("global_group") is dist.group.WORLD
        for setting in (None, 1, "expert_group"):
            assert resolve_lbl_group(setting) is None
        with pytest.raises(ConfigError, match=r"lbl_process_group=2 must divide the number"):
            resolve_lbl_group(2)
        assert torch.distributed.get_world_size() == 1
    finally:
        dist.destroy_process_group()
