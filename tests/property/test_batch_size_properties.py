"""Properties of the batch-size arithmetic (``utils/config_transforms.py``) and of time strings.

For random global batch sizes, process counts and microbatch sizes: the per-process batch times
the process count is the global batch whenever it divides, otherwise a one-line ConfigError
names the key; ``'auto'`` microbatching passes through; the microbatches of a device batch
multiply back to it. Time strings such as ``'100ba'`` or ``'0.1dur'`` (``max_duration``,
``eval_interval``, ``t_warmup``) parse to the time they spell and round-trip.
"""

from __future__ import annotations

import os
import re
from typing import Any
from unittest import mock

import pytest
from composer.core import Time, TimeUnit
from hypothesis import assume, given
from hypothesis import strategies as st

from llmfoundry.optim.scheduler import InverseSquareRootWithWarmupScheduler
from llmfoundry.utils.config_transforms import (
    batch_size_info,
    calculate_batch_size_info,
    update_batch_size_info,
)
from llmfoundry.utils.exceptions import ConfigError

from .strategies import FAST

sizes = st.integers(1, 64)
micro_sizes = st.one_of(st.just("auto"), st.integers(-2, 70))


def one_line_error_naming(key: str, raises: pytest.ExceptionInfo[BaseException]) -> None:
    """The error is a single line that names ``key``."""
    message = str(raises.value)
    assert key in message
    assert "\n" not in message


@FAST
@given(global_batch=sizes, world=st.integers(1, 16), micro=micro_sizes)
def test_global_batch_splits_evenly_or_names_the_key(
    global_batch: int, world: int, micro: int | str
) -> None:
    if global_batch % world:
        with pytest.raises(ConfigError) as raises:
            batch_size_info(global_batch, None, micro, world)
        one_line_error_naming("global_train_batch_size", raises)
        return
    per_device = global_batch // world
    if isinstance(micro, int) and (micro <= 0 or (micro < per_device and per_device % micro)):
        with pytest.raises(ConfigError) as raises:
            batch_size_info(global_batch, None, micro, world)
        one_line_error_naming("device_train_microbatch_size", raises)
        return
    info = batch_size_info(global_batch, None, micro, world)
    assert info.device_train_batch_size * world == global_batch
    if micro == "auto":
        assert (info.device_train_microbatch_size, info.device_train_grad_accum) == ("auto", "auto")
        return
    assert info.device_train_microbatch_size == min(int(micro), per_device)
    assert isinstance(info.device_train_grad_accum, int)
    assert info.device_train_microbatch_size * info.device_train_grad_accum == per_device


@FAST
@given(device=sizes, world=st.integers(1, 16), global_batch=st.none() | sizes)
def test_device_batch_size_gives_the_global_one_or_a_disagreement_naming_both(
    device: int, world: int, global_batch: int | None
) -> None:
    if global_batch is not None and global_batch != device * world:
        with pytest.raises(ConfigError) as raises:
            batch_size_info(global_batch, device, "auto", world)
        one_line_error_naming("global_train_batch_size", raises)
        if global_batch % world == 0:  # divisible: the two settings disagree
            one_line_error_naming("device_train_batch_size", raises)
        return
    info = batch_size_info(global_batch, device, 1, world)
    assert info.device_train_batch_size == device
    assert (info.device_train_microbatch_size, info.device_train_grad_accum) == (1, device)


@FAST
@given(
    key=st.sampled_from(["global_train_batch_size", "device_train_batch_size"]),
    value=st.one_of(st.integers(-5, 0), st.floats(0.5, 8), st.text(max_size=3), st.booleans()),
)
def test_a_batch_size_that_is_not_a_positive_integer_names_its_key(key: str, value: Any) -> None:
    sizes_by_key: dict[str, Any] = {
        "global_train_batch_size": None,
        "device_train_batch_size": None,
        key: value,
    }
    with pytest.raises(ConfigError) as raises:
        batch_size_info(
            sizes_by_key["global_train_batch_size"],
            sizes_by_key["device_train_batch_size"],
            "auto",
            4,
        )
    one_line_error_naming(key, raises)


@FAST
@given(
    per_device=sizes,
    world=st.integers(1, 8),
    micro=st.one_of(st.just("auto"), st.integers(1, 70)),
    eval_batch=st.none() | sizes,
)
def test_the_config_transform_fills_the_per_process_keys(
    per_device: int, world: int, micro: int | str, eval_batch: int | None
) -> None:
    assume(not isinstance(micro, int) or micro >= per_device or per_device % micro == 0)
    cfg: dict[str, Any] = {
        "global_train_batch_size": per_device * world,
        "device_train_microbatch_size": micro,
        "device_eval_batch_size": eval_batch,
    }
    with mock.patch.dict(os.environ, {"WORLD_SIZE": str(world)}):
        out = update_batch_size_info(dict(cfg))
        calculated = calculate_batch_size_info(per_device * world, micro)
    expected_micro = "auto" if micro == "auto" else min(int(micro), per_device)
    assert out["n_gpus"] == world
    assert out["device_train_batch_size"] == per_device
    assert out["device_train_microbatch_size"] == expected_micro
    assert calculated == (per_device, expected_micro, out["device_train_grad_accum"])
    default_eval = 1 if expected_micro == "auto" else expected_micro
    assert out["device_eval_batch_size"] == (default_eval if eval_batch is None else eval_batch)


INTEGER_UNITS = ["ep", "ba", "sp", "tok", "iter"]


def scheduler_with(key: str, text: str) -> InverseSquareRootWithWarmupScheduler:
    """The inverse-square-root schedule with ``key`` set to ``text`` (the others valid, in
    ``text``'s unit: the schedule's times must share one)."""
    unit = next((u for u in INTEGER_UNITS if re.fullmatch(rf"[0-9.]+{u}", text)), "ba")
    times = {"t_warmup": f"0{unit}", "t_cooldown": f"0{unit}", "t_max": "1dur", key: text}
    return InverseSquareRootWithWarmupScheduler(
        t_warmup=times["t_warmup"],
        t_scale=f"1{unit}",
        t_cooldown=times["t_cooldown"],
        t_max=times["t_max"],
    )


@FAST
@given(
    value=st.integers(0, 10**9),
    unit=st.sampled_from(INTEGER_UNITS),
    fraction=st.floats(0, 1),
    key=st.sampled_from(["t_warmup", "t_cooldown", "t_max"]),
)
def test_time_strings_parse_to_the_time_they_spell_and_round_trip(
    value: int, unit: str, fraction: float, key: str
) -> None:
    for text, expected in (
        (f"{value}{unit}", Time(value, TimeUnit(unit))),
        (f"{fraction!r}dur", Time(fraction, TimeUnit.DURATION)),
    ):
        parsed = Time.from_timestring(text)
        assert parsed == expected
        assert Time.from_timestring(parsed.to_timestring()) == parsed
        assert getattr(scheduler_with(key, text), key) == expected


malformed_times = st.one_of(
    # (A bare number is no malformed time: Composer reads '5' as a timedelta, 50 seconds.)
    st.sampled_from([*INTEGER_UNITS, "dur"]),  # no number
    st.tuples(st.integers(1, 999), st.sampled_from(["steps", "batches", "ms", "b", "epochs"])).map(
        lambda p: f"{p[0]}{p[1]}"
    ),  # unknown unit
    st.text(alphabet="xyz !?", min_size=1, max_size=5),
)


@FAST
@given(text=malformed_times, key=st.sampled_from(["t_warmup", "t_cooldown"]))
def test_a_malformed_time_string_names_the_key_in_one_line(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as raises:
        scheduler_with(key, text)
    one_line_error_naming(key, raises)


@FAST
@given(value=st.integers(0, 99), unit=st.sampled_from(INTEGER_UNITS))
def test_a_fraction_of_an_integer_unit_names_the_key(value: int, unit: str) -> None:
    with pytest.raises(ConfigError) as raises:
        scheduler_with("t_warmup", f"{value}.5{unit}")
    one_line_error_naming("t_warmup", raises)
