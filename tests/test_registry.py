"""Registries: built-ins are registered, unknown names get suggestions, plugins load by entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import llmfoundry  # noqa: F401
from llmfoundry import registry
from llmfoundry.utils.builders import (
    build_algorithms,
    build_callbacks,
    build_optimizer_from_section,
    build_scheduler_from_section,
)
from llmfoundry.utils.exceptions import ConfigError


def test_builtins_are_registered() -> None:
    assert "mpt_causal_lm" in registry.models
    assert "text" in registry.dataloaders
    assert {"decoupled_adamw", "adamw"} <= set(registry.optimizers.get_all())
    assert {"cosine_with_warmup", "constant_with_warmup", "linear_decay_with_warmup"} <= set(
        registry.schedulers.get_all()
    )
    assert {"speed_monitor", "lr_monitor", "memory_monitor", "runtime_estimator"} <= set(
        registry.callbacks.get_all()
    )
    assert "gradient_clipping" in registry.algorithms


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="'decoupled_adamx'.*did you mean 'decoupled_adamw'"):
        registry.optimizers.get("decoupled_adamx")


def test_unknown_kwarg_names_key_path() -> None:
    import torch

    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(
        ConfigError, match=r"optimizer\.weight_decy is not a valid key; did you mean 'weight_decay'"
    ):
        build_optimizer_from_section(
            {"name": "decoupled_adamw", "lr": 1e-3, "weight_decy": 0.1}, params
        )
    with pytest.raises(ConfigError, match=r"callbacks\.speed_monitor\.window is not a valid key"):
        build_callbacks({"speed_monitor": {"window": 3}})


def test_building_checks_keys_against_the_slots_the_builder_leaves() -> None:
    """The builder's positional arguments fill the entry's first parameters; the config may not
    set those, and must set every other required one."""
    from llmfoundry.utils.registry_utils import construct_from_registry

    def scaled(values: list[float], factor: float, offset: float = 0.0) -> list[float]:
        return [v * factor + offset for v in values]

    table: registry.Registry[object] = registry.Registry("scalers", "test entries")
    table.register("scaled", func=scaled)
    assert construct_from_registry(table, "scaler", {"name": "scaled", "factor": 2}, [1.0]) == [2.0]
    with pytest.raises(
        ConfigError, match=r"^scaler\.factor is missing; it is required \(add factor: <value>\)$"
    ):
        construct_from_registry(table, "scaler", {"name": "scaled", "offset": 1}, [1.0])
    with pytest.raises(ConfigError, match=r"^scaler\.values is not a valid key"):
        construct_from_registry(
            table, "scaler", {"name": "scaled", "factor": 2, "values": [3.0]}, [1.0]
        )


def test_builders_pass_kwargs_through() -> None:
    import torch
    from composer.optim.scheduler import CosineAnnealingWithWarmupScheduler

    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer_from_section(
        {"name": "decoupled_adamw", "lr": 0.25, "betas": [0.8, 0.9]}, params
    )
    assert opt.param_groups[0]["lr"] == 0.25
    assert tuple(opt.param_groups[0]["betas"]) == (0.8, 0.9)
    sched = build_scheduler_from_section(
        {"name": "cosine_with_warmup", "t_warmup": "7ba", "alpha_f": 0.1}
    )
    assert isinstance(sched, CosineAnnealingWithWarmupScheduler)
    assert str(sched.t_warmup) == "7ba" and sched.alpha_f == 0.1
    (monitor,) = build_callbacks({"speed_monitor": {"window_size": 3}})
    assert type(monitor).__name__ == "SpeedMonitor"


def test_a_constructors_own_refusal_is_one_line_naming_the_entry() -> None:
    # Composer's EMA refuses half_life and smoothing together (its default half_life is set):
    # before, a ValueError traceback once the model was built.
    with pytest.raises(ConfigError) as err:
        build_algorithms({"ema": {"half_life": "10ba", "smoothing": 0.9}})
    assert str(err.value).startswith("algorithms.ema: Only one of")
    assert isinstance(err.value.__cause__, ValueError)
    with pytest.raises(ConfigError, match=r"^callbacks\.speed_monitor: "):
        build_callbacks({"speed_monitor": {"window_size": -3}})  # built without the config check


def test_plugin_registers_through_entry_point(tmp_path: Path) -> None:
    """A third-party package's entry point shows up in the registry (in a fresh process)."""
    (tmp_path / "my_plugin.py").write_text("def build(**kwargs):\n    return ('plugin', kwargs)\n")
    dist_info = tmp_path / "my_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[llmfoundry_callbacks]\nmy_callback = my_plugin:build\n"
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from llmfoundry.utils.builders import build_callbacks;"
        "print(build_callbacks({'my_callback': {'x': 1}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert "[('plugin', {'x': 1})]" in out.stdout


def test_registry_cli_lists_entries() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llmfoundry.cli.cli", "registry", "list", "optimizers"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("optimizers:")
    assert "  decoupled_adamw" in out.stdout.splitlines()
    bad = subprocess.run(
        [sys.executable, "-m", "llmfoundry.cli.cli", "registry", "list", "optimizer"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "did you mean 'optimizers'" in bad.stderr


def test_a_loggers_own_name_argument_passes_through() -> None:
    from composer.loggers import InMemoryLogger, WandBLogger

    from llmfoundry.utils.builders import build_callbacks, build_loggers
    from llmfoundry.utils.exceptions import ConfigError

    built = build_loggers(
        {"wandb": {"project": "p", "name": "my-run", "init_kwargs": {"mode": "disabled"}}}
    )
    assert isinstance(built[0], WandBLogger)
    assert built[0]._init_kwargs["name"] == "my-run"
    assert isinstance(build_loggers({"inmemory": {}})[0], InMemoryLogger)
    with pytest.raises(ConfigError, match=r"callbacks\.lr_monitor\.name is not a valid key"):
        build_callbacks({"lr_monitor": {"name": "x"}})


def test_dataset_constructor_is_a_registry_with_llm_foundrys_api() -> None:
    from collections.abc import Mapping
    from typing import Any

    import catalogue

    from llmfoundry.data.finetuning import dataset_constructor as package_level
    from llmfoundry.data.finetuning.tasks import dataset_constructor as old_path

    constructor = registry.dataset_constructor
    assert old_path is constructor and package_level is constructor
    assert constructor.get("tatsu-lab/alpaca") is not None  # a built-in
    names = ("t18/my-dataset", "t18/alias")

    def qa(row: Mapping[str, Any]) -> dict[str, str]:
        return {"prompt": row["q"], "response": row["a"]}

    try:
        assert constructor.register(*names)(qa) is qa
        assert constructor.get("t18/alias") is qa
        assert constructor.resolve(None, "t18/my-dataset", "dataset.hf_name") is qa
        assert constructor.registry.find("t18/my-dataset")["module"] == __name__
        with pytest.raises(ValueError, match="already registered as 't18/my-dataset'"):
            constructor.register("t18/my-dataset")(qa)
        with pytest.raises(ConfigError, match=r"^dataset\.preprocessing_fn: 't18/my-datset' is no"):
            constructor.resolve("t18/my-datset", None, "dataset.preprocessing_fn")
    finally:
        for name in names:
            catalogue.REGISTRY.pop(("llmfoundry", "dataset_constructor", name), None)
    assert constructor.get("t18/my-dataset") is None
