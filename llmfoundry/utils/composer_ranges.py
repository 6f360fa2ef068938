"""The ranges of Composer's own components, which their signatures declare as plain types.

The config check types a component's keys by its constructor's annotations
(:mod:`llmfoundry.utils.config_components`). Composer annotates ``window_size: int`` where only a
positive int works, so ``callbacks.speed_monitor.window_size: 0`` would pass the check and stop
the run later (a division by zero, or a ``ValueError`` traceback from the constructor). This
table narrows those annotations. It is keyed by the constructor's qualified name, so reading it
imports nothing.

A new range for a Composer callback, logger, algorithm, scheduler or the profiler schedule goes
here; our own components state theirs on their signatures.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from llmfoundry.utils.config_checks import (
    PROBABILITY,
    TIME,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
)

__all__ = ["COMPOSER_RANGES", "SCHEDULER_RANGES", "TimeUnitName", "range_hints"]

# The units Composer's speed and runtime callbacks report in.
TimeUnitName = Literal["seconds", "minutes", "hours", "days"]
# A Composer time string (its annotation is a plain str); or a count.
_TIME = Annotated[str, TIME]
_OPTIONAL_TIME = Annotated[str | None, TIME]
_COUNT_OR_TIME = Annotated[int | str, TIME]

_CALLBACKS = "composer.callbacks."
_LOGGERS = "composer.loggers."
_ALGORITHMS = "composer.algorithms."


COMPOSER_RANGES: dict[str, dict[str, Any]] = {
    "composer.profiler.profiler_schedule.cyclic_schedule": {
        "skip_first": NonNegativeInt,
        "wait": NonNegativeInt,
        "warmup": NonNegativeInt,
        "active": PositiveInt,
        "repeat": NonNegativeInt,
    },
    f"{_CALLBACKS}speed_monitor.SpeedMonitor": {
        "window_size": PositiveInt,
        "time_unit": TimeUnitName,
    },
    f"{_CALLBACKS}runtime_estimator.RuntimeEstimator": {
        "skip_batches": NonNegativeInt,
        "time_unit": TimeUnitName,
    },
    f"{_CALLBACKS}memory_snapshot.MemorySnapshot": {
        "skip_batches": NonNegativeInt,
        "max_entries": PositiveInt,
    },
    f"{_CALLBACKS}oom_observer.OOMObserver": {"max_entries": PositiveInt},
    f"{_CALLBACKS}optimizer_monitor.OptimizerMonitor": {"batch_log_interval": PositiveInt},
    f"{_CALLBACKS}early_stopper.EarlyStopper": {
        "min_delta": NonNegativeFloat,
        "patience": _COUNT_OR_TIME,
    },
    f"{_LOGGERS}tensorboard_logger.TensorboardLogger": {"flush_interval": PositiveInt},
    f"{_LOGGERS}mosaicml_logger.MosaicMLLogger": {"log_interval": PositiveInt},
    f"{_ALGORITHMS}layer_freezing.layer_freezing.LayerFreezing": {
        "freeze_start": Probability,
        "freeze_level": Probability,
    },
    f"{_ALGORITHMS}sam.sam.SAM": {
        "rho": PositiveFloat,
        "epsilon": PositiveFloat,
        "interval": PositiveInt,
    },
    f"{_ALGORITHMS}seq_length_warmup.seq_length_warmup.SeqLengthWarmup": {
        "duration": Probability,
        "min_seq_length": PositiveInt,
        "max_seq_length": PositiveInt,
        "step_size": PositiveInt,
    },
    f"{_ALGORITHMS}ema.ema.EMA": {
        "half_life": _OPTIONAL_TIME,
        "smoothing": Annotated[float | None, PROBABILITY],
        "ema_start": _TIME,
    },
    f"{_ALGORITHMS}swa.swa.SWA": {
        "swa_start": _TIME,
        "swa_end": _TIME,
        "update_interval": _TIME,
        "anneal_steps": PositiveInt,
        "anneal_strategy": Literal["linear", "cos"],
    },
    f"{_ALGORITHMS}alibi.alibi.Alibi": {
        "max_sequence_length": PositiveInt,
        "train_sequence_length_scaling": PositiveFloat,
    },
}

# Every Composer scheduler's parameters of these names: a negative lr multiplier (alpha, alpha_i,
# alpha_f, gamma) would turn descent into ascent.
SCHEDULER_RANGES: dict[str, Any] = {
    "alpha": NonNegativeFloat,
    "alpha_i": NonNegativeFloat,
    "alpha_f": NonNegativeFloat,
    "gamma": NonNegativeFloat,
    "power": NonNegativeFloat,
    "t_mult": PositiveFloat,
}
_SCHEDULER_MODULE = "composer.optim.scheduler"


def range_hints(func: Any) -> dict[str, Any]:
    """The narrowed annotations :data:`COMPOSER_RANGES` (or, for a Composer scheduler,
    :data:`SCHEDULER_RANGES`) holds for ``func``; empty for others."""
    module = getattr(func, "__module__", "")
    if module == _SCHEDULER_MODULE:
        return SCHEDULER_RANGES
    return COMPOSER_RANGES.get(f"{module}.{getattr(func, '__qualname__', '')}", {})
