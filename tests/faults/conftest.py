"""Fixtures for the fault-injection tests: the tiny MDS data of the command tests, and a helper
that runs a script under :mod:`tests.faults.killer`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO
from tests.command_utils.conftest import (
    RESUMABLE,
    mds_dir,  # noqa: F401  (a fixture, used by name)
    train_in_memory,
    write_run_yaml,
)

KILLER = Path(__file__).with_name("killer.py")


def run_killed(
    target: str, call: int, mode: str, script: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<script>`` with ``target`` patched to SIGKILL the process on call ``call``
    (see :mod:`tests.faults.killer`); assert that it died of that SIGKILL."""
    environment = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            str(KILLER),
            target,
            str(call),
            mode,
            str(REPO / "scripts" / script),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=environment,
    )
    assert result.returncode == -9, result.stderr[-3000:]
    return result


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# The tiny run of the command tests, 6 batches with a checkpoint every 2, resumable.
OVERRIDES = [*RESUMABLE, "run_name=fault-test", "callbacks={}"]


def train_here(yaml_path: Path, *extra: str) -> tuple[int, list[float]]:
    """Train in this process; the batch it ended at and the losses of the batches it trained."""
    from llmfoundry.utils.config_utils import TrainConfig, load_config

    cfg, resolved = load_config(yaml_path, [*OVERRIDES, *extra], TrainConfig)
    trainer, _, losses = train_in_memory(cfg, resolved)
    return trainer.state.timestamp.batch.value, losses


@pytest.fixture(scope="session")
def clean_run(
    tmp_path_factory: pytest.TempPathFactory,
    mds_dir: Path,  # noqa: F811  (the fixture imported above)
    tokenizer_dir: Path,
) -> Path:
    """The save folder of an uninterrupted run (checkpoints at batches 2, 4 and 6)."""
    folder = tmp_path_factory.mktemp("clean")
    yaml_path = write_run_yaml(folder, mds_dir, tokenizer_dir, folder / "ck")
    assert train_here(yaml_path)[0] == 6
    return folder / "ck"
