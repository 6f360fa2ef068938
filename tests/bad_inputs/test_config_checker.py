"""The config checker on its own: what each annotation accepts and how it says what it allows."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pytest

from llmfoundry.utils.config_checks import POSITIVE, TIME, check_fields, check_value, describe
from llmfoundry.utils.config_components import check_call_kwargs
from llmfoundry.utils.exceptions import ConfigError


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@pytest.mark.parametrize(
    ("annotation", "words"),
    [
        (int | None, "int or null"),
        (bool, "bool (true or false)"),
        (tuple[float, float], "a list of 2 (float, float)"),
        (list[str], "list of str"),
        (dict[str, Any], "mapping"),
        (Literal["a", "b"], "one of 'a', 'b'"),
        (Color, "one of red, blue"),
        (Annotated[int, POSITIVE], "a positive int"),
        (
            Annotated[int | str, TIME],
            "a non-negative int or a time string (a number >= 0 and a unit: 10ba, 2ep, 1000tok, "
            "500sp or 0.5dur)",
        ),
    ],
)
def test_describe_says_what_is_allowed(annotation: Any, words: str) -> None:
    assert describe(annotation) == words


@pytest.mark.parametrize(
    ("value", "annotation", "ok"),
    [
        (3, float, True),
        (True, int, False),
        (True, float, False),
        ("maybe", bool, False),
        ([0.9, 0.95], tuple[float, float], True),
        ([0.9], tuple[float, float], False),
        ([0.9, "x"], tuple[float, float], False),
        (["a", 1], list[str], False),
        ({"k": 1}, dict[str, int], True),
        ({"k": "v"}, dict[str, int], False),
        ("blue", Color, True),
        ("green", Color, False),
        ("c", Literal["a", "b"], False),
        (0, Annotated[int, POSITIVE], False),
        (None, Annotated[int | None, POSITIVE], True),
        ("0.5dur", Annotated[int | str, TIME], True),
        ("1h30m", Annotated[int | str, TIME], True),
        (3, Annotated[int | str, TIME], True),
        ("3", Annotated[int | str, TIME], False),
        ("10bat", Annotated[int | str, TIME], False),
    ],
)
def test_check_value(value: Any, annotation: Any, ok: bool) -> None:
    if ok:
        check_value(value, annotation, "a.b")
    else:
        with pytest.raises(ConfigError, match=r"^a\.b must be .*, got "):
            check_value(value, annotation, "a.b")


def test_wrong_type_message_names_the_path_the_type_and_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        check_value("maybe", bool, "model.attn_config.qk_ln")
    assert (
        str(info.value) == "model.attn_config.qk_ln must be bool (true or false), got str 'maybe'"
    )


def test_fields_report_unknown_keys_with_the_valid_ones() -> None:
    hints = {"window_size": int, "time_unit": str}
    with pytest.raises(ConfigError) as info:
        check_fields({"windo": 3}, hints, "callbacks.speed_monitor")
    assert str(info.value) == (
        "callbacks.speed_monitor.windo is not a valid key; did you mean 'window_size'? "
        "(valid: time_unit, window_size)"
    )
    check_fields({"extra": object()}, hints, "x", open_keys=True)


def _builder(params: list[int], lr: float, *, betas: tuple[float, float] = (0.9, 0.9)) -> None:
    del params, lr, betas


def test_call_kwargs_follow_the_signature() -> None:
    check_call_kwargs(_builder, {"lr": 1, "betas": [0.8, 0.9]}, "optimizer", reserved={"params"})
    with pytest.raises(ConfigError, match=r"^optimizer\.lr is missing; it is required"):
        check_call_kwargs(_builder, {}, "optimizer", reserved={"params"})
    with pytest.raises(ConfigError, match=r"^optimizer\.params is not a valid key"):
        check_call_kwargs(_builder, {"lr": 1.0, "params": []}, "optimizer", reserved={"params"})
    with pytest.raises(ConfigError, match=r"^optimizer\.betas must be a list of 2"):
        check_call_kwargs(_builder, {"lr": 1.0, "betas": 0.9}, "optimizer", reserved={"params"})
