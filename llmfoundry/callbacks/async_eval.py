"""``async_eval``: LLM Foundry's launcher of evaluation runs on the MosaicML platform; refused here.

LLM Foundry's ``AsyncEval`` submits a separate evaluation run (through ``mcli``, the MosaicML
platform's client) for each checkpoint the training run saves. That needs the hosted platform,
which this project does not use, so naming it fails when the callbacks are built, in one line
that names the alternatives:

* run ``scripts/eval/eval.py`` (``llmfoundry eval``) on the checkpoints the run saves, or
* evaluate during training with the run config's ``eval_interval`` (and ``icl_tasks``).

The keys LLM Foundry takes (``interval``, ``eval_run_config``) are accepted, so the refusal is
the same whatever the entry holds; a misspelled key is still reported as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from composer.core import Callback, Time

from llmfoundry.utils.exceptions import ConfigError

__all__ = ["ASYNC_EVAL_UNSUPPORTED", "AsyncEval"]

ASYNC_EVAL_UNSUPPORTED = (
    "callbacks.async_eval launches evaluation runs on the MosaicML platform, which this project "
    "does not use; remove it, and run scripts/eval/eval.py on the checkpoints the run saves or "
    "evaluate during training with eval_interval"
)


class AsyncEval(Callback):
    """LLM Foundry's platform-launched evaluation; building it raises :class:`ConfigError`.

    Args:
        train_config: the run config (filled in by the trainer).
        interval: how often LLM Foundry would launch an evaluation run.
        eval_run_config: LLM Foundry's settings of those runs.

    Raises:
        ConfigError: always, with :data:`ASYNC_EVAL_UNSUPPORTED`.
    """

    def __init__(
        self,
        train_config: Mapping[str, Any],
        interval: str | int | Time[int],
        eval_run_config: Mapping[str, Any] | None = None,
    ) -> None:
        del train_config, interval, eval_run_config
        raise ConfigError(ASYNC_EVAL_UNSUPPORTED)

    @staticmethod
    def check_before_build(**kwargs: Any) -> None:
        """The config check's call: the same refusal, before the model is built."""
        del kwargs
        raise ConfigError(ASYNC_EVAL_UNSUPPORTED)
