"""LLM Foundry's training-side names, each by its effect: the ``inv_sqrt_with_warmup`` schedule,
the ``no_op`` optimizer, ``spin_dataloaders``, ``tp_config.strategy: ffn`` and the
``config_transforms`` registry with ``update_batch_size_info``."""

from __future__ import annotations

import logging
import math
import textwrap
from pathlib import Path
from typing import Any

import catalogue
import pytest
import torch
from composer.core import State, Time
from composer.devices import DeviceCPU
from composer.utils.parallelism import TPConfig
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
)

from llmfoundry import registry
from llmfoundry.command_utils.parallelism import build_parallelism_config, build_tp_strategies
from llmfoundry.command_utils.train import build_trainer, compute_batch_sizes
from llmfoundry.optim import NoOp
from llmfoundry.utils.builders import build_optimizer_from_section, build_scheduler_from_section
from llmfoundry.utils.config_transforms import apply_transforms_to_config
from llmfoundry.utils.config_utils import TrainConfig, load_config
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import tiny_config, tiny_model

from .conftest import write_run_yaml

# --- inv_sqrt_with_warmup -------------------------------------------------------------------

# Warmup 4, scale 2, cooldown 4 of max_duration 20 batches, alpha_f_decay 0.2, cooldown to 0.1:
#   t < 4: t / 4;  4 <= t < 16: 0.2 + 0.8 / sqrt((t - 4 + 2) / 2);
#   16 <= t <= 20: from a = 0.2 + 0.8 / sqrt(7) linearly down to 0.1.
COOLDOWN_START = 0.2 + 0.8 / math.sqrt(7.0)
INV_SQRT_MULTIPLIERS = {
    0: 0.0,
    1: 0.25,
    2: 0.5,
    4: 1.0,
    6: 0.2 + 0.8 / math.sqrt(2.0),
    10: 0.6,
    16: COOLDOWN_START,
    18: COOLDOWN_START + 0.5 * (0.1 - COOLDOWN_START),
    20: 0.1,
}


def test_inv_sqrt_with_warmup_gives_llm_foundrys_multipliers() -> None:
    scheduler = build_scheduler_from_section(
        {
            "name": "inv_sqrt_with_warmup",
            "t_warmup": "4ba",
            "t_scale": "2ba",
            "t_cooldown": "4ba",
            "alpha_f_decay": 0.2,
            "alpha_f_cooldown": 0.1,
        }
    )
    state = State(
        model=torch.nn.Linear(2, 2),
        rank_zero_seed=0,
        run_name="inv-sqrt",
        device=DeviceCPU(),
        max_duration="20ba",
    )
    for batch, expected in INV_SQRT_MULTIPLIERS.items():
        state.timestamp = state.timestamp.copy(batch=Time.from_batch(batch))
        assert scheduler(state) == pytest.approx(expected, abs=1e-12), batch


# --- no_op ----------------------------------------------------------------------------------


def test_no_op_optimizer_leaves_parameters_unchanged() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = build_optimizer_from_section({"name": "no_op"}, model.parameters())
    assert isinstance(optimizer, NoOp)
    assert [group["lr"] for group in optimizer.param_groups] == [0.0]

    def closure() -> float:
        optimizer.zero_grad()
        loss = model(torch.ones(2, 4)).square().sum()
        loss.backward()
        return float(loss)

    expected_loss = float(model(torch.ones(2, 4)).square().sum())
    for _ in range(3):
        assert optimizer.step(closure) == pytest.approx(expected_loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    for param, original in zip(model.parameters(), before, strict=True):
        assert torch.equal(param, original)
    assert optimizer.step() is None
    assert optimizer.state_dict()["state"] == {}


# --- spin_dataloaders -----------------------------------------------------------------------


class CountingIterable:
    """Wraps a dataloader and counts how often iteration over it starts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.iterations = 0

    def __iter__(self) -> Any:
        self.iterations += 1
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(("spin", "eval_iterations"), [(True, 2), (False, 1)])
def test_spin_dataloaders_reaches_the_trainer(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path, spin: bool, eval_iterations: int
) -> None:
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")
    overrides = [f"spin_dataloaders={str(spin).lower()}", "max_duration=1ba", "save_folder=null"]
    cfg, resolved = load_config(yaml_path, overrides, TrainConfig)
    trainer = build_trainer(cfg, resolved)
    assert trainer.spin_dataloaders is spin
    # At the start of each epoch Composer spins every eval loader once (one batch) when
    # spin_dataloaders is on; the end-of-training evaluation then iterates it again.
    evaluator = trainer.state.evaluators[0]
    counting = CountingIterable(evaluator.dataloader.dataloader)
    evaluator.dataloader.dataloader = counting
    trainer.fit()
    trainer.close()
    assert counting.iterations == eval_iterations


# --- tp_config.strategy: ffn ----------------------------------------------------------------


def test_ffn_strategy_plans_every_mpt_ffn() -> None:
    model = tiny_model(tiny_config(n_layers=2))
    plan = build_tp_strategies("ffn", model)
    prefixes = [f"transformer.blocks.{i}.ffn" for i in range(2)]
    assert set(plan) == {f"{p}{s}" for p in prefixes for s in ("", ".up_proj", ".down_proj")}
    for prefix in prefixes:
        gather = plan[prefix]
        assert isinstance(gather, PrepareModuleInput)
        assert (gather.input_layouts, gather.desired_input_layouts) == ((Shard(0),), (Replicate(),))
        assert gather.use_local_output is True
        up, down = plan[f"{prefix}.up_proj"], plan[f"{prefix}.down_proj"]
        assert type(up) is ColwiseParallel and type(down) is RowwiseParallel
        assert (up.input_layouts, up.output_layouts) == ((Replicate(),), (Shard(-1),))
        assert (down.input_layouts, down.output_layouts) == ((Shard(-1),), (Shard(0),))
    assert registry.tp_strategies.get("ffn") is not None


def test_tp_config_strategy_builds_the_layer_plan(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("FSDP_VERSION", raising=False)
    model = tiny_model(tiny_config(n_layers=2))
    tp_config = {"strategy": "ffn", "tensor_parallel_degree": 2}
    fsdp_config = {"sharding_strategy": "FULL_SHARD"}
    parallelism = build_parallelism_config(fsdp_config, tp_config, "cpu", 4, 4, model=model)
    assert parallelism is not None
    tp = parallelism["tp"]
    assert isinstance(tp, TPConfig) and tp.tensor_parallel_degree == 2
    assert tp.layer_plan is not None
    assert {name: type(style) for name, style in tp.layer_plan.items()} == {
        name: type(style) for name, style in build_tp_strategies("ffn", model).items()
    }
    # One process: nothing to split over, so tensor parallelism is dropped (as in LLM Foundry).
    with caplog.at_level(logging.WARNING):
        single = build_parallelism_config(None, tp_config, "cpu", 1, 1, model=model)
    assert single is None
    assert "tp_config is ignored: tensor parallelism needs more than one process" in caplog.text


def test_tp_config_errors_name_the_fix() -> None:
    model = tiny_model(tiny_config(n_layers=1))
    fsdp_config = {"sharding_strategy": "FULL_SHARD"}
    with pytest.raises(ConfigError, match="did you mean 'ffn'"):
        build_parallelism_config(fsdp_config, {"strategy": "fnn"}, "cpu", 2, 2, model=model)
    with pytest.raises(ConfigError, match="tp_config needs a strategy"):
        build_parallelism_config(fsdp_config, {"tensor_parallel_degree": 2}, "cpu", 2, 2)
    linear = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="Sequential has no ffn, ffn.up_proj, ffn.down_proj"):
        build_tp_strategies("ffn", linear)


# --- config transforms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micro", "expected"),
    [
        # (device batch, microbatch, grad accum, eval batch) over 4 processes of a batch of 64
        (4, (16, 4, 4, 4)),
        ("auto", (16, "auto", "auto", 1)),
        (32, (16, 16, 1, 16)),  # larger than the device batch: reduced to it
    ],
)
def test_update_batch_size_info_splits_the_global_batch(
    monkeypatch: pytest.MonkeyPatch, micro: int | str, expected: tuple[Any, ...]
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    transform = registry.config_transforms.get("update_batch_size_info")
    cfg = transform({"global_train_batch_size": 64, "device_train_microbatch_size": micro})
    assert cfg["n_gpus"] == 4
    assert (
        cfg["device_train_batch_size"],
        cfg["device_train_microbatch_size"],
        cfg["device_train_grad_accum"],
        cfg["device_eval_batch_size"],
    ) == expected
    with pytest.raises(ConfigError, match=r"global_train_batch_size=66 must be divisible .*\(4\)"):
        transform({"global_train_batch_size": 66, "device_train_microbatch_size": 2})


def test_loaded_config_carries_the_transforms_batch_sizes(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg, logged = load_config(yaml_path, ["device_eval_batch_size=null"], TrainConfig)
    # global 8 over 2 processes, microbatch 4; the eval batch defaults to the microbatch.
    assert (cfg.n_gpus, cfg.device_train_batch_size, cfg.device_train_grad_accum) == (2, 4, 1)
    assert cfg.device_eval_batch_size == 4
    assert (logged["n_gpus"], logged["device_train_batch_size"]) == (2, 4)
    # Built for another number of processes, the split is redone from the global batch.
    assert compute_batch_sizes(cfg, 1, DeviceCPU()).device_train_batch_size == 8


PLUGIN = """
from llmfoundry.registry import config_transforms


def warmup_from_fraction(cfg):
    fraction = cfg.pop("warmup_fraction")
    cfg["scheduler"]["t_warmup"] = f"{{fraction}}dur"
    return cfg


config_transforms.register("{name}", func=warmup_from_fraction)
"""


def test_code_paths_transform_runs_before_validation(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    """A transform registered by a code_paths file rewrites a key that validation would reject."""
    name = "h3_test_warmup_from_fraction"
    plugin = tmp_path / f"{name}.py"
    plugin.write_text(textwrap.dedent(PLUGIN.format(name=name)))
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")
    try:
        with pytest.raises(ConfigError, match="unknown top-level key 'warmup_fraction'"):
            load_config(yaml_path, ["warmup_fraction=0.25"], TrainConfig)
        cfg, _ = load_config(
            yaml_path, [f"code_paths=[{plugin}]", "warmup_fraction=0.25"], TrainConfig
        )
    finally:
        catalogue.REGISTRY.pop(("llmfoundry", "config_transforms", name), None)
    assert cfg.scheduler["t_warmup"] == "0.25dur"
    assert cfg.n_gpus == 1  # the built-in transform ran too


def test_apply_transforms_to_config_order_and_errors() -> None:
    def double(cfg: dict[str, Any]) -> dict[str, Any]:
        return {**cfg, "x": cfg["x"] * 2}

    def add_one(cfg: dict[str, Any]) -> dict[str, Any]:
        return {**cfg, "x": cfg["x"] + 1}

    assert apply_transforms_to_config({"x": 3}, [double, add_one]) == {"x": 7}
    assert apply_transforms_to_config({"x": 3}, [add_one, double]) == {"x": 8}
    assert apply_transforms_to_config({"x": 3}, None) == {"x": 3}
    with pytest.raises(ConfigError, match="did you mean 'update_batch_size_info'"):
        apply_transforms_to_config({}, ["update_batch_size_inf"])
    with pytest.raises(ConfigError, match="config transform 'bad' returned list"):

        def bad(cfg: dict[str, Any]) -> Any:
            return [cfg]

        apply_transforms_to_config({}, [bad])
