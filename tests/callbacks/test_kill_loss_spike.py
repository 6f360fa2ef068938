"""kill_loss_spike: NaN stops at the named batch, spikes warn or stop, rollback restores the checkpoint."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from llmfoundry import registry
from llmfoundry.callbacks.kill_loss_spike import KillLossSpike
from llmfoundry.utils.exceptions import ConfigError, TrainingDivergedError

from .scripted import BatchRecorder, ScriptedLossModel, scripted_trainer

NAN = float("nan")


def _fit(
    losses: dict[int, float],
    spike: KillLossSpike,
    save_folder: Path | None = None,
    save_interval: str = "1000ba",
) -> BatchRecorder:
    recorder = BatchRecorder()
    trainer = scripted_trainer(
        ScriptedLossModel(losses),
        [spike, recorder],
        save_folder=save_folder,
        save_interval=save_interval,
    )
    try:
        trainer.fit()
    finally:
        trainer.close()
    return recorder


def test_registered_with_llm_foundry_defaults() -> None:
    spike = registry.callbacks.get("kill_loss_spike")()
    assert isinstance(spike, KillLossSpike)
    assert (spike.log_only, spike.patience, spike.outlier_multiplier) == (True, 4, 2)
    assert (spike.window_size, spike.loss_cap, spike.rollback) == (100, 10, False)


def test_nan_loss_stops_at_the_named_batch() -> None:
    recorder = BatchRecorder()
    # Sample 5 is the 6th batch; NaN stops the run even with log_only (the default).
    with pytest.raises(
        TrainingDivergedError,
        match=r"^kill_loss_spike: the training loss of batch 6 is nan; stopping the run$",
    ):
        _fit_into(recorder, {5: NAN}, KillLossSpike())
    assert recorder.batches == [1, 2, 3, 4, 5]


def _fit_into(recorder: BatchRecorder, losses: dict[int, float], spike: KillLossSpike) -> None:
    trainer = scripted_trainer(ScriptedLossModel(losses), [spike, recorder])
    try:
        trainer.fit()
    finally:
        trainer.close()


def test_spike_only_warns_with_log_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="llmfoundry.callbacks.kill_loss_spike")
    # window [1, 1, 1]; samples 5 and 6 (batches 6, 7) are two outliers in a row > patience 1
    recorder = _fit({5: 10.0, 6: 10.0}, KillLossSpike(patience=1, window_size=3))
    assert len(recorder.batches) == 10
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "loss spike at batch 7: 2 losses in a row" in warnings[0]


def test_single_outlier_is_not_a_spike(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="llmfoundry.callbacks.kill_loss_spike")
    recorder = _fit({5: 8.0, 7: 8.0}, KillLossSpike(log_only=False, patience=1, window_size=3))
    assert len(recorder.batches) == 10
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_spike_stops_without_log_only() -> None:
    recorder = BatchRecorder()
    with pytest.raises(TrainingDivergedError, match="loss spike at batch 7.*stopping the run"):
        _fit_into(
            recorder, {5: 10.0, 6: 10.0}, KillLossSpike(log_only=False, patience=1, window_size=3)
        )
    assert recorder.batches == [1, 2, 3, 4, 5, 6]


def test_persistently_high_loss_stops_after_two_windows() -> None:
    losses = dict.fromkeys(range(64), 6.0)
    recorder = BatchRecorder()
    with pytest.raises(
        TrainingDivergedError,
        match="persistently high loss at batch 4: 2 of the last 2 losses exceed loss_cap=5",
    ):
        _fit_into(recorder, losses, KillLossSpike(log_only=False, window_size=2, loss_cap=5))
    assert recorder.batches == [1, 2, 3]


def _checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return saved["state"]["model"]


def test_rollback_restores_the_checkpoint_and_skips_the_bad_batches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llmfoundry.callbacks.kill_loss_spike")
    recorder = _fit(
        {7: NAN},
        KillLossSpike(rollback=True, max_rollbacks=1),
        save_folder=tmp_path,
        save_interval="3ba",
    )
    # Sample 7 (batch 8) is NaN: back to the batch-6 checkpoint, on with sample 8 as batch 7.
    assert recorder.batches == [1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 10]
    assert recorder.samples == list(range(12))
    saved = _checkpoint_weights(tmp_path / "ep0-ba6-rank0.pt")
    after_rollback = recorder.weights[7]
    assert set(saved) == set(after_rollback)
    for name, value in saved.items():
        torch.testing.assert_close(after_rollback[name], value, rtol=0, atol=0)
    # the NaN step had poisoned nothing that survived: training ends with finite weights
    assert all(torch.isfinite(w).all() for w in recorder.weights[-1].values())
    assert any(
        "rolled back to" in r.getMessage() and "skipping batches 7-8" in r.getMessage()
        for r in caplog.records
    )


def test_rollbacks_are_limited(tmp_path: Path) -> None:
    recorder = BatchRecorder()
    trainer = scripted_trainer(
        ScriptedLossModel({7: NAN, 9: NAN}),
        [KillLossSpike(rollback=True, max_rollbacks=1), recorder],
        save_folder=tmp_path,
        save_interval="3ba",
    )
    with pytest.raises(TrainingDivergedError, match="batch 8 is nan; max_rollbacks=1 already used"):
        trainer.fit()
    trainer.close()
    assert recorder.samples == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert recorder.batches == [1, 2, 3, 4, 5, 6, 7, 6, 7]


def test_rollback_without_a_checkpoint_stops() -> None:
    with pytest.raises(
        TrainingDivergedError, match="rollback needs a checkpoint but this run has saved none"
    ):
        _fit({2: NAN}, KillLossSpike(rollback=True))


def test_inf_counts_as_divergence() -> None:
    with pytest.raises(TrainingDivergedError, match="batch 3 is inf"):
        _fit({2: math.inf}, KillLossSpike())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window_size": 0}, "window_size must be a positive int, got int 0"),
        ({"outlier_multiplier": 0}, "outlier_multiplier must be a positive float, got int 0"),
        ({"outlier_multiplier": "2"}, "outlier_multiplier must be a positive float, got str '2'"),
        ({"patience": -1}, "patience must be a non-negative int, got int -1"),
        ({"max_rollbacks": True}, "max_rollbacks must be a non-negative int, got bool True"),
    ],
)
def test_bad_options_are_one_line_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        KillLossSpike(**options)
    assert str(info.value) == f"callbacks.kill_loss_spike.{message}"
