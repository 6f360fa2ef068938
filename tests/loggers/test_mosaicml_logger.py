"""The ``mosaicml`` logger builds and runs without contacting the MosaicML platform unless the
process is one of the platform's runs."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import mcli
import pytest
from composer.loggers import MosaicMLLogger

from llmfoundry.utils.builders import build_loggers
from llmfoundry.utils.exceptions import ConfigError
from tests.loggers.tiny_run import fit_tiny_run

SECTION = {"mosaicml": {"log_interval": 5, "ignore_keys": ["wall_clock/*"]}}


@pytest.fixture
def platform_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every metadata update the logger sends to the platform (none leave the process)."""
    calls: list[dict[str, Any]] = []

    def update_run_metadata(run_name: str, metadata: dict[str, Any], **kwargs: Any) -> Future[None]:
        del kwargs
        calls.append({"run": run_name, **metadata})
        done: Future[None] = Future()
        done.set_result(None)
        return done

    monkeypatch.setattr(mcli, "update_run_metadata", update_run_metadata)
    for name in ("MOSAICML_PLATFORM", "RUN_NAME"):
        monkeypatch.delenv(name, raising=False)
    return calls


@pytest.mark.parametrize("env", [{}, {"RUN_NAME": "my-run"}, {"MOSAICML_PLATFORM": "false"}])
def test_off_the_platform_it_is_built_and_contacts_nothing(
    platform_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (logger,) = build_loggers(SECTION)
    assert isinstance(logger, MosaicMLLogger)
    assert (logger.log_interval, logger.ignore_keys) == (5, ["wall_clock/*"])
    fit_tiny_run([logger])
    assert platform_calls == []


def test_in_a_platform_run_it_reports_progress(
    platform_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOSAICML_PLATFORM", "True")
    monkeypatch.setenv("RUN_NAME", "my-run")
    (logger,) = build_loggers(SECTION)
    fit_tiny_run([logger], max_batches=4)
    assert platform_calls and {call["run"] for call in platform_calls} == {"my-run"}
    progress = [
        call["mosaicml/training_progress"]
        for call in platform_calls
        if "mosaicml/training_progress" in call
    ]
    assert progress[-1] == "[batch=4/4]"


def test_a_misspelled_key_is_reported() -> None:
    with pytest.raises(ConfigError, match=r"^loggers\.mosaicml\.log_intervall is not a valid key"):
        build_loggers({"mosaicml": {"log_intervall": 5}})
