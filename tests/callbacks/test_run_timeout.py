"""run_timeout stops training early and leaves a final checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llmfoundry import registry
from llmfoundry.callbacks.run_timeout import RunTimeout
from llmfoundry.utils.exceptions import ConfigError

from .scripted import BatchRecorder, ScriptedLossModel, scripted_trainer


def test_timeout_stops_early_with_a_final_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llmfoundry.callbacks.run_timeout")
    recorder = BatchRecorder()
    trainer = scripted_trainer(
        ScriptedLossModel(sleep_s=0.1),
        [registry.callbacks.get("run_timeout")(timeout=0.25), recorder],
        max_duration="50ba",
        save_folder=tmp_path,
        save_interval="1000ba",
    )
    trainer.fit()
    trainer.close()
    stopped_at = recorder.batches[-1]
    assert 2 <= stopped_at <= 6, recorder.batches
    assert int(trainer.state.timestamp.batch) == stopped_at
    # the interval (1000ba) never came: this checkpoint is the one written at the stop
    assert (tmp_path / f"ep0-ba{stopped_at}-rank0.pt").is_file()
    assert any(f"stopping after batch {stopped_at}" in r.getMessage() for r in caplog.records)


def test_no_stop_within_the_timeout() -> None:
    recorder = BatchRecorder()
    trainer = scripted_trainer(
        ScriptedLossModel(), [RunTimeout(timeout=600), recorder], max_duration="5ba"
    )
    trainer.fit()
    trainer.close()
    assert recorder.batches == [1, 2, 3, 4, 5]


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="callbacks.run_timeout.timeout=0 must be > 0"):
        RunTimeout(timeout=0)
