"""The optimizers built by name from config sections, and a short Composer fit with
``decoupled_lionw`` + ``inv_sqrt_tf`` whose OptimizerMonitor metrics reach the logger."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from composer import Trainer
from composer.loggers import InMemoryLogger
from composer.models import ComposerClassifier
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from llmfoundry.optim import DecoupledAdaLRLion, DecoupledClipLion, DecoupledLionW
from llmfoundry.utils.builders import (
    build_callbacks,
    build_optimizer_from_section,
    build_scheduler_from_section,
)
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import cpu_trainer

SECTIONS = {
    "decoupled_lionw": (DecoupledLionW, {}),
    "clip_lion": (DecoupledClipLion, {"outlier_threshold": 7.0}),
    "adalr_lion": (
        DecoupledAdaLRLion,
        {"outlier_threshold": 7.0, "timeout": 20, "lr_penalty": 0.5, "min_scale": 0.01},
    ),
}


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_optimizer_built_from_yaml_section(name: str) -> None:
    cls, extra = SECTIONS[name]
    yaml = OmegaConf.create(
        {"name": name, "lr": 2.0e-4, "betas": [0.9, 0.95], "weight_decay": 1.0e-5, **extra}
    )
    section = OmegaConf.to_container(yaml, resolve=True)
    assert isinstance(section, dict)
    params = list(torch.nn.Linear(3, 2).parameters())
    optimizer = build_optimizer_from_section({str(k): v for k, v in section.items()}, params)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == 2.0e-4 and group["initial_lr"] == 2.0e-4
    assert group["betas"] == (0.9, 0.95) and group["weight_decay"] == 1.0e-5
    for key, value in extra.items():
        assert getattr(optimizer, key) == value


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_unknown_optimizer_key_names_its_path(name: str) -> None:
    params = list(torch.nn.Linear(3, 2).parameters())
    with pytest.raises(ConfigError, match=r"optimizer\.beta1"):
        build_optimizer_from_section({"name": name, "lr": 1e-4, "beta1": 0.9}, params)


def _classifier() -> ComposerClassifier:
    """An MLP classifier (8 -> 16 -> 4), seeded 0."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    return ComposerClassifier(module, num_classes=4)


def test_trainer_fits_with_lionw_inv_sqrt_and_optimizer_monitor() -> None:
    model = _classifier()
    dataset = TensorDataset(torch.randn(24, 8), torch.randint(0, 4, (24,)))
    optimizer = build_optimizer_from_section(
        {"name": "decoupled_lionw", "lr": 1e-2, "betas": [0.9, 0.99], "weight_decay": 1e-5},
        model.parameters(),
    )
    scheduler = build_scheduler_from_section(
        {"name": "inv_sqrt_tf", "t_warmup": "1ba", "t_scale": "1ba", "t_cooldown": "0ba"}
    )
    callbacks = build_callbacks({"optimizer_monitor": {"batch_log_interval": 1}, "lr_monitor": {}})
    in_memory = InMemoryLogger()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    trainer = cpu_trainer(
        model,
        train_dataloader=DataLoader(dataset, batch_size=8),
        max_duration="3ba",
        optimizers=optimizer,
        schedulers=scheduler,
        callbacks=callbacks,
        loggers=in_memory,
        save_folder=None,
    )
    trainer.fit()

    names = [name for name, _ in model.named_parameters()]
    for name in names:
        for key in ("l2_norm/moment", "l2_norm/update", "l2_norm/param", "cosine/update_grad"):
            series = in_memory.data[f"{key}/{name}"]
            assert len(series) == 3, (key, name)
            assert all(math.isfinite(value) for _, value in series)
        # Lion moves every coordinate with a nonzero gradient by exactly lr: all of them moved.
        assert not torch.equal(before[name], dict(model.named_parameters())[name].detach())
    assert len(in_memory.data["l2_norm/grad/global"]) == 3
    # Warmup over one batch, then 1 / sqrt(t): multipliers 0, 1, 1/sqrt(2) of lr 1e-2.
    lrs = [value for _, value in in_memory.data["lr-DecoupledLionW/group0"]]
    assert lrs == pytest.approx([0.0, 1e-2, 1e-2 / math.sqrt(2.0)])


def _trainer(name: str, max_duration: str, **kwargs: Any) -> Trainer:
    model = _classifier()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(48, 8, generator=generator)
    inputs[24:32] *= 100.0  # a spike in batch 3, so the outlier rules fire after resuming
    dataset = TensorDataset(inputs, torch.randint(0, 4, (48,), generator=generator))
    extra = {"outlier_delay": 1, "outlier_threshold": 2.0} if name != "decoupled_lionw" else {}
    optimizer = build_optimizer_from_section(
        {"name": name, "lr": 1e-2, "weight_decay": 1e-4, **extra}, model.parameters()
    )
    return cpu_trainer(
        model,
        train_dataloader=DataLoader(dataset, batch_size=8, shuffle=False),
        max_duration=max_duration,
        optimizers=optimizer,
        schedulers=build_scheduler_from_section(
            {"name": "inv_sqrt_tf", "t_warmup": "1ba", "t_scale": "2ba", "t_cooldown": "2ba"}
        ),
        **kwargs,
    )


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_composer_checkpoint_resume_matches_uninterrupted_run(name: str, tmp_path: Path) -> None:
    uninterrupted = _trainer(name, "6ba")
    uninterrupted.fit()

    first = _trainer(name, "6ba", save_folder=str(tmp_path), save_interval="2ba")
    first.fit(duration="2ba")
    checkpoint = tmp_path / "ep0-ba2-rank0.pt"
    assert checkpoint.exists(), sorted(p.name for p in tmp_path.iterdir())
    resumed = _trainer(name, "6ba", load_path=str(checkpoint))
    resumed.fit()

    expected = dict(uninterrupted.state.model.named_parameters())
    for param_name, param in resumed.state.model.named_parameters():
        assert torch.equal(param, expected[param_name]), param_name
    # The spike after the checkpoint made the adaptive rules fire, so their restored history mattered.
    states = list(resumed.state.optimizers[0].state.values())
    if name == "clip_lion":
        assert sum(state["clipped_batches"].item() for state in states) > 0
    if name == "adalr_lion":
        assert sum(state["outlier_flags"].sum().item() for state in states) > 0
