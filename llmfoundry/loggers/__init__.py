"""Logger destinations available by name in a run config's ``loggers:`` section.

The experiment trackers are Composer's classes; ``wandb`` and ``file`` are thin subclasses that
fix Composer 0.32 against current ``wandb`` and bring back ``file``'s ``log_level`` key. Those that need an optional package are
registered through :func:`requiring`, so a config naming one without the package fails when the
logger is built, with one line naming the extra to install (``pip install
'llm-foundry[loggers]'``) instead of Composer's multi-line import error mid-setup.

``mosaicml`` is Composer's ``MosaicMLLogger``, which reports run metadata to the MosaicML
platform. It only talks to the platform inside one of the platform's runs (``MOSAICML_PLATFORM``
is ``true`` and ``RUN_NAME`` names the run); anywhere else it is built disabled and the run goes
on without it, contacting nothing.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from typing import Any

from composer.loggers import (
    CometMLLogger,
    InMemoryLogger,
    LoggerDestination,
    MLFlowLogger,
    MosaicMLLogger,
    TensorboardLogger,
)
from composer.loggers.mosaicml_logger import MOSAICML_PLATFORM_ENV_VAR

from llmfoundry import registry
from llmfoundry.loggers.file_logger import FileLogger
from llmfoundry.loggers.run_artifacts import RunArtifactsLogger, build_run_artifacts_logger
from llmfoundry.loggers.wandb_logger import WandBLogger
from llmfoundry.utils.exceptions import MissingDependencyError

LOGGERS_EXTRA_HINT = "pip install 'llm-foundry[loggers]'"


def requiring(
    cls: type[LoggerDestination], module: str, install_hint: str
) -> Callable[..., LoggerDestination]:
    """``cls`` as a factory that first checks ``module`` is importable.

    The factory keeps ``cls``'s signature (through ``__wrapped__``), so a misspelled config key
    is still reported by name.

    Args:
        cls: the logger class.
        module: the top-level module it imports.
        install_hint: the command that installs it, for the message.

    Returns:
        The factory.

    Raises:
        MissingDependencyError: (from the factory) if ``module`` is not installed.
    """

    @functools.wraps(cls, updated=())
    def build(*args: Any, **kwargs: Any) -> LoggerDestination:
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                f"the {cls.__name__} logger needs the '{module}' package, which is not installed: "
                f"{install_hint}"
            )
        return cls(*args, **kwargs)

    return build


@functools.wraps(MosaicMLLogger, updated=())
def mosaicml_logger(*args: Any, **kwargs: Any) -> MosaicMLLogger:
    """Composer's ``MosaicMLLogger``, disabled unless this process is a MosaicML platform run."""
    logger = MosaicMLLogger(*args, **kwargs)
    if os.environ.get(MOSAICML_PLATFORM_ENV_VAR, "false").lower() != "true":
        logger._enabled = False  # Composer's own switch; it alone gates every platform call
    return logger


registry.loggers.register_all(
    {
        "wandb": requiring(WandBLogger, "wandb", LOGGERS_EXTRA_HINT),
        # Composer's TensorboardLogger writes through torch.utils.tensorboard, which needs tensorboard.
        "tensorboard": requiring(TensorboardLogger, "tensorboard", LOGGERS_EXTRA_HINT),
        "inmemory": InMemoryLogger,
        "in_memory_logger": InMemoryLogger,
        "mlflow": requiring(MLFlowLogger, "mlflow", LOGGERS_EXTRA_HINT),
        "comet_ml": requiring(CometMLLogger, "comet_ml", "pip install comet_ml"),
        "file": FileLogger,
        "run_artifacts": RunArtifactsLogger,
        "mosaicml": mosaicml_logger,
    }
)

__all__ = [
    "FileLogger",
    "RunArtifactsLogger",
    "WandBLogger",
    "build_run_artifacts_logger",
    "mosaicml_logger",
    "requiring",
]
