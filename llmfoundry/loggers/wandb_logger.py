"""Composer's Weights & Biases logger, adapted to current ``wandb`` releases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from composer.core import State
from composer.loggers import Logger
from composer.loggers import WandBLogger as ComposerWandBLogger

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run


def _run_url(run: Run) -> str | None:
    """The run's address (what Composer's ``run.get_url()`` expects)."""
    return run.url


class WandBLogger(ComposerWandBLogger):
    """Composer's :class:`~composer.loggers.WandBLogger`, working with ``wandb`` 0.2x/0.3x.

    Composer 0.32 reads the run's address with ``Run.get_url()``, which newer ``wandb``
    releases dropped in favour of the ``Run.url`` property, so its ``init`` fails right after
    ``wandb.init``. Before delegating, this adds ``get_url`` back to wandb's ``Run`` as an alias
    of ``url`` when it is missing. Arguments are Composer's (``project``, ``entity``, ``tags``,
    ``init_kwargs``, ...); ``WANDB_MODE=offline`` logs to the local ``wandb/`` folder.
    """

    def init(self, state: State, logger: Logger) -> None:
        from wandb.sdk.wandb_run import Run

        missing = "get_url"  # not declared by wandb's Run, so it is added by name
        if not hasattr(Run, missing):
            setattr(Run, missing, _run_url)
        super().init(state, logger)


__all__ = ["WandBLogger"]
