"""scheduled_gc: collects on its batch schedule with automatic gc off, and restores gc after fit."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from composer.core import Callback

from llmfoundry import registry
from llmfoundry.callbacks import scheduled_gc
from llmfoundry.utils.exceptions import ConfigError

from .scripted import ScriptedLossModel, scripted_trainer


class GcProbe(Callback):
    """Records whether automatic gc is on at each batch start."""

    def __init__(self) -> None:
        self.enabled_at_batch_start: list[bool] = []

    def batch_start(self, state: Any, logger: Any) -> None:
        del state, logger
        self.enabled_at_batch_start.append(gc.isenabled())


def test_collects_every_interval_and_restores_gc(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    trainer_ref: list[Any] = []

    def recording_collect() -> None:
        state = trainer_ref[0].state
        calls.append(f"ba{int(state.timestamp.batch)}")

    monkeypatch.setattr(scheduled_gc, "collect_garbage", recording_collect)
    assert gc.isenabled()
    probe = GcProbe()
    trainer = scripted_trainer(
        ScriptedLossModel(),
        [registry.callbacks.get("scheduled_gc")(batch_interval=3), probe],
        max_duration="7ba",
    )
    trainer_ref.append(trainer)
    trainer.fit()
    # fit start (ba0), before the batches at ba0, ba3, ba6, and fit end (ba7)
    assert calls == ["ba0", "ba0", "ba3", "ba6", "ba7"]
    assert probe.enabled_at_batch_start == [False] * 7
    assert gc.isenabled()
    trainer.close()
    assert gc.isenabled()


def test_a_disabled_gc_stays_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduled_gc, "collect_garbage", lambda: None)
    gc.disable()
    try:
        trainer = scripted_trainer(
            ScriptedLossModel(), [scheduled_gc.ScheduledGarbageCollector(2)], max_duration="2ba"
        )
        trainer.fit()
        trainer.close()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_batch_interval_must_be_positive() -> None:
    with pytest.raises(
        ConfigError, match="callbacks.scheduled_gc.batch_interval must be a positive int, got int 0"
    ):
        scheduled_gc.ScheduledGarbageCollector(0)


def test_gen_1_interval_adds_young_generation_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    # LLM Foundry's gen_1_batch_interval: gc.collect(1) on its own schedule, before the full one.
    calls: list[str] = []
    trainer_ref: list[Any] = []

    def at_batch(kind: str) -> None:
        calls.append(f"{kind}@ba{int(trainer_ref[0].state.timestamp.batch)}")

    monkeypatch.setattr(scheduled_gc, "collect_garbage", lambda: at_batch("full"))

    def collect(generation: int = 2) -> int:
        if generation == 1:  # other callers' full collections are not this callback's
            at_batch("gen1")
        return 0

    monkeypatch.setattr(scheduled_gc.gc, "collect", collect)
    callback = registry.callbacks.get("scheduled_gc")(batch_interval=4, gen_1_batch_interval=2)
    trainer = scripted_trainer(ScriptedLossModel(), [callback], max_duration="5ba")
    trainer_ref.append(trainer)
    trainer.fit()
    trainer.close()
    assert calls == [
        "full@ba0",  # fit start
        "gen1@ba0",
        "full@ba0",
        "gen1@ba2",
        "gen1@ba4",
        "full@ba4",
        "full@ba5",  # fit end
    ]
    with pytest.raises(ConfigError, match="gen_1_batch_interval must be a positive int"):
        scheduled_gc.ScheduledGarbageCollector(3, gen_1_batch_interval=0)
