"""run_timeout interrupts a process that hangs after training, and only after training."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmfoundry.callbacks.run_timeout import RunTimeout
from llmfoundry.utils.exceptions import ConfigError
from tests import REPO

from .scripted import BatchRecorder, ScriptedLossModel, scripted_trainer

# Trains 4 slow batches (0.3 s each, longer than the 0.5 s timeout in total), then "hangs".
HANGING_RUN = textwrap.dedent(
    """
    import logging, sys, time
    sys.path.insert(0, {repo!r})
    logging.basicConfig(level=logging.ERROR)
    from llmfoundry import registry
    from tests.callbacks.scripted import BatchRecorder, ScriptedLossModel, scripted_trainer

    recorder = BatchRecorder()
    trainer = scripted_trainer(
        ScriptedLossModel(sleep_s=0.3),
        [registry.callbacks.get("run_timeout")(timeout={timeout}), recorder],
        max_duration="4ba",
    )
    trainer.fit()
    print("trained", recorder.batches, flush=True)
    print("fit ended at", time.monotonic(), flush=True)
    time.sleep({hang_s})
    print("exited normally", flush=True)
    """
)


def run(tmp_path: Path, timeout: float, hang_s: float) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "run.py"
    script.write_text(HANGING_RUN.format(repo=str(REPO), timeout=timeout, hang_s=hang_s))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )


def test_hang_after_training_is_interrupted(tmp_path: Path) -> None:
    result = run(tmp_path, timeout=0.5, hang_s=120)
    # Training (1.2 s, longer than the timeout) was not cut: the clock starts at fit end.
    assert "trained [1, 2, 3, 4]" in result.stdout, result.stderr[-2000:]
    assert "exited normally" not in result.stdout
    assert result.returncode != 0  # interrupted: 130, or -SIGINT
    assert "still alive 0.5 s after training ended" in result.stderr


def test_timer_starts_at_fit_end_and_never_holds_the_exit() -> None:
    callback = RunTimeout(timeout=30)
    recorder = BatchRecorder()
    trainer = scripted_trainer(ScriptedLossModel(), [callback, recorder], max_duration="3ba")
    trainer.fit()
    trainer.close()
    assert recorder.batches == [1, 2, 3]
    timer = callback.timer
    assert timer is not None and timer.is_alive()
    # A daemon thread: an interpreter that exits in time does not wait for it.
    assert timer.daemon and timer.interval == 30
    timer.cancel()


def test_timeout_must_be_positive() -> None:
    with pytest.raises(
        ConfigError, match=r"^callbacks\.run_timeout\.timeout must be a positive float, got int 0$"
    ):
        RunTimeout(timeout=0)
    assert RunTimeout().timeout == 1800
