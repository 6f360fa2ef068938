"""env_logging: package versions, device, world size and chosen env vars land in the logger."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

import pytest
from composer.loggers import InMemoryLogger

from llmfoundry import registry

from .scripted import ScriptedLossModel, scripted_trainer


def test_logs_environment_at_fit_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = tmp_path / "llm-foundry"
    checkout.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(checkout)], check=True)
    (checkout / "f").write_text("x")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    memory = InMemoryLogger()
    callback = registry.callbacks.get("env_logging")(workspace_dir=str(tmp_path), log_system=True)
    trainer = scripted_trainer(
        ScriptedLossModel(), [callback], max_duration="1ba", loggers=[memory]
    )
    trainer.fit()
    trainer.close()

    data = memory.hyperparameters["environment_data"]
    versions = data["package_versions"]
    for name in ("torch", "mosaicml", "transformers", "llm-foundry"):
        assert versions[name] == importlib.metadata.version(name)
    assert data["git_info"] == {"llm-foundry": {"commit_hash": commit, "branch": "main"}}
    assert data["distributed_info"]["world_size"] == 1
    assert data["distributed_info"]["rank"] == 0
    assert data["gpu_info"]["device"] in ("cpu", "cuda")
    assert data["system_info"]["cpu"]["threads"] >= 1
    assert data["env_vars"] == {"OMP_NUM_THREADS": "2"}
    assert "hunter2" not in repr(data)


def test_missing_workspace_and_sections_off() -> None:
    memory = InMemoryLogger()
    callback = registry.callbacks.get("env_logging")(
        workspace_dir="/no/such/workspace",
        log_packages=False,
        log_nvidia=False,
        log_docker=False,
        log_gpu=False,
        log_distributed=False,
        env_vars=[],
    )
    trainer = scripted_trainer(
        ScriptedLossModel(), [callback], max_duration="1ba", loggers=[memory]
    )
    trainer.fit()
    trainer.close()
    assert memory.hyperparameters["environment_data"] == {"git_info": {}, "env_vars": {}}
