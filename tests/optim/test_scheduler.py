"""Schedulers: inv_sqrt_tf against its formula worked out by hand, in every time unit, and the
warmup schedulers with ``dur``/``tok``/``ep`` times, all evaluated on a real Composer ``State``."""

from __future__ import annotations

import math

import pytest
import torch
from composer.core import State, Time
from composer.devices import DeviceCPU
from composer.optim import ComposerScheduler

from llmfoundry.optim import InverseSquareRootWithWarmupScheduler
from llmfoundry.utils.builders import build_scheduler_from_section
from llmfoundry.utils.exceptions import ConfigError

BATCHES_PER_EPOCH = 10


def _state(max_duration: str) -> State:
    state = State(
        model=torch.nn.Linear(2, 2),
        rank_zero_seed=0,
        run_name="scheduler-test",
        device=DeviceCPU(),
        max_duration=max_duration,
    )
    # A dataloader length lets epochs convert to batches, as during a real fit.
    state.set_dataloader([0] * BATCHES_PER_EPOCH, "train", dataloader_len=BATCHES_PER_EPOCH)
    return state


def _at(state: State, *, batch: int = 0, token: int = 0) -> State:
    state.timestamp = state.timestamp.copy(
        batch=Time.from_batch(batch),
        token=Time.from_token(token),
        epoch=Time.from_epoch(batch // BATCHES_PER_EPOCH),
    )
    return state


# Warmup 10, scale 20, cooldown 30, max 100 (in batches), alpha_f_decay 0.2, alpha_f_cooldown 0.1:
#   t < 10: t / 10;  10 <= t < 70: 0.2 + 0.8 / sqrt((t - 10 + 20) / 20);
#   cooldown from d(70) = 0.2 + 0.8 / sqrt(4) = 0.6 down to 0.1 over [70, 100].
INV_SQRT_EXPECTED = {
    0: 0.0,
    5: 0.5,
    10: 1.0,  # d(10) = 0.2 + 0.8 / sqrt(1)
    30: 0.2 + 0.8 / math.sqrt(2.0),
    50: 0.2 + 0.8 / math.sqrt(3.0),
    70: 0.6,
    85: 0.35,  # halfway: 0.6 + 0.5 * (0.1 - 0.6)
    100: 0.1,
    130: 0.1,  # past t_max the cooldown stays at its end value
}

UNIT_CASES = {
    # max_duration, (t_warmup, t_scale, t_cooldown), multiplier from batches to the unit
    "batches": ("100ba", ("10ba", "20ba", "30ba"), 1),
    "tokens": ("1000tok", ("100tok", "200tok", "300tok"), 10),
    "dur_of_tokens": ("1000tok", ("0.1dur", "0.2dur", "0.3dur"), 10),
    "epochs": ("10ep", ("1ep", "2ep", "3ep"), 1),
    "dur_of_epochs": ("10ep", ("0.1dur", "0.2dur", "0.3dur"), 1),
}


@pytest.mark.parametrize("case", sorted(UNIT_CASES))
def test_inv_sqrt_tf_matches_formula_in_every_unit(case: str) -> None:
    max_duration, (t_warmup, t_scale, t_cooldown), per_batch = UNIT_CASES[case]
    scheduler = build_scheduler_from_section(
        {
            "name": "inv_sqrt_tf",
            "t_warmup": t_warmup,
            "t_scale": t_scale,
            "t_cooldown": t_cooldown,
            "alpha_f_decay": 0.2,
            "alpha_f_cooldown": 0.1,
        }
    )
    assert isinstance(scheduler, InverseSquareRootWithWarmupScheduler)
    state = _state(max_duration)
    for batch, expected in INV_SQRT_EXPECTED.items():
        value = scheduler(_at(state, batch=batch, token=batch * per_batch))
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-12), (case, batch)


def test_inv_sqrt_tf_defaults_decay_to_zero_without_cooldown() -> None:
    scheduler = InverseSquareRootWithWarmupScheduler(
        t_warmup="4ba", t_scale="8ba", t_cooldown="0ba"
    )
    state = _state("1000ba")
    # alpha_f_decay 0: 1 / sqrt((t - 4 + 8) / 8); halves 3 * t_scale after warmup.
    assert scheduler(_at(state, batch=2)) == pytest.approx(0.5)
    assert scheduler(_at(state, batch=28)) == pytest.approx(0.5)
    assert scheduler(_at(state, batch=1000)) == pytest.approx(1.0 / math.sqrt(1004 / 8))


def test_inv_sqrt_tf_rejects_mixed_units_and_rising_lr() -> None:
    # Units that differ as given fail when the scheduler is built (and at the config check).
    with pytest.raises(ConfigError, match="t_warmup=10ba"):
        InverseSquareRootWithWarmupScheduler(t_warmup="10ba", t_scale="100tok", t_cooldown="0tok")
    # A 'dur' time takes max_duration's unit, known only once training starts.
    scheduler = InverseSquareRootWithWarmupScheduler(
        t_warmup="10ba", t_scale="0.1dur", t_cooldown="0ba"
    )
    with pytest.raises(ValueError, match="t_warmup=10ba"):
        scheduler(_at(_state("1000tok"), batch=20, token=200))
    with pytest.raises(ConfigError, match="alpha_f_decay"):
        InverseSquareRootWithWarmupScheduler(
            "1ba", "1ba", "1ba", alpha_f_decay=0.0, alpha_f_cooldown=0.5
        )
    with pytest.raises(ConfigError, match="t_scale"):
        InverseSquareRootWithWarmupScheduler("1ba", "0ba", "1ba")


def test_unknown_scheduler_key_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"scheduler\.t_warm"):
        build_scheduler_from_section(
            {"name": "inv_sqrt_tf", "t_warm": "1ba", "t_scale": "1ba", "t_cooldown": "0ba"}
        )


# Warmup over the first 10% then decay to alpha_f = 0.1 at t_max: with frac = (t - 100) / 900
# tokens, cosine gives 0.1 + 0.9 * (1 + cos(pi * frac)) / 2 and linear 1 + frac * (0.1 - 1).
WARMUP_SCHEDULES = {
    "cosine_with_warmup": {
        50: 0.5,
        100: 1.0,
        325: 0.1 + 0.45 * (1 + math.cos(math.pi / 4)),
        550: 0.55,
        1000: 0.1,
    },
    "linear_decay_with_warmup": {50: 0.5, 100: 1.0, 325: 0.775, 550: 0.55, 1000: 0.1},
}


@pytest.mark.parametrize("name", sorted(WARMUP_SCHEDULES))
@pytest.mark.parametrize(
    ("max_duration", "t_warmup", "t_max"),
    [
        ("1000tok", "0.1dur", "1dur"),
        ("1000tok", "100tok", "1000tok"),
        ("1000tok", "0.1dur", "1000tok"),
    ],
)
def test_warmup_schedulers_with_dur_and_token_times(
    name: str, max_duration: str, t_warmup: str, t_max: str
) -> None:
    scheduler: ComposerScheduler = build_scheduler_from_section(
        {"name": name, "t_warmup": t_warmup, "t_max": t_max, "alpha_f": 0.1}
    )
    state = _state(max_duration)
    for token, expected in WARMUP_SCHEDULES[name].items():
        assert scheduler(_at(state, token=token)) == pytest.approx(expected), (name, token)


@pytest.mark.parametrize("name", sorted(WARMUP_SCHEDULES))
def test_warmup_schedulers_with_epoch_times(name: str) -> None:
    # 1 epoch = 10 batches: warmup 1ep = 10ba, t_max 10ep = 100ba; same shape as the token case.
    scheduler = build_scheduler_from_section(
        {"name": name, "t_warmup": "1ep", "t_max": "1dur", "alpha_f": 0.1}
    )
    state = _state("10ep")
    for token, expected in WARMUP_SCHEDULES[name].items():
        if token % 10 == 0:
            value = scheduler(_at(state, batch=token // 10))
            assert value == pytest.approx(expected), (name, token)


def test_constant_with_warmup_ramps_to_alpha_then_holds() -> None:
    # Warmup over 100 tokens from 0 to alpha = 0.5, then 0.5 until the end.
    scheduler = build_scheduler_from_section(
        {"name": "constant_with_warmup", "t_warmup": "100tok", "alpha": 0.5}
    )
    state = _state("1000tok")
    expected = {0: 0.0, 50: 0.25, 100: 0.5, 550: 0.5, 1000: 0.5}
    for token, value in expected.items():
        assert scheduler(_at(state, token=token)) == pytest.approx(value), token
