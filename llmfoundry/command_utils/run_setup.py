"""What the run commands (``train``, ``eval``) share: process setup, the run's precision and
name, the hyper-parameters they log, and leaving the process group at the end.

``train.py`` and ``eval.py`` both take these from here, so neither imports the other.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from composer import Trainer
from composer.core import Precision
from composer.devices import Device

from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError, closest_match
from llmfoundry.utils.quiet_logs import silence_unactionable_warnings
from llmfoundry.utils.user_code import import_code_paths

logger = logging.getLogger(__name__)

# FP8 matmuls need Ada (8.9) or Hopper (9.0) tensor cores or newer.
FP8_MIN_CAPABILITY = (8, 9)


def setup_logging(python_log_level: str | None) -> None:
    """Send ``llmfoundry`` (and Composer) log records to stderr at the configured level, and
    drop the warnings a user cannot act on (``utils.quiet_logs``)."""
    silence_unactionable_warnings()
    if python_log_level is None:
        return
    level = python_log_level.upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError(
            f"python_log_level={python_log_level!r} is not a logging level; use one of debug, "
            "info, warning, error or critical (any case), or null to leave logging as it is"
        )
    logging.basicConfig(format="%(asctime)s: pid%(process)d [%(levelname)s] %(name)s: %(message)s")
    for name in ("llmfoundry", "composer"):
        logging.getLogger(name).setLevel(level)


def start_run(python_log_level: str | None, code_paths: Sequence[str] | None) -> None:
    """Set up logging, then import the run's ``code_paths`` (first: they may register the
    entries a config section names)."""
    setup_logging(python_log_level)
    import_code_paths(code_paths)


def check_fp8_available(device: Device) -> None:
    """Refuse ``precision: amp_fp8`` where it cannot run (before any training starts).

    Raises:
        ConfigError: on a device other than an NVIDIA GPU of compute capability 8.9 or newer.
        MissingDependencyError: when TransformerEngine is not installed.
    """
    if device.name != "gpu" or not torch.cuda.is_available():
        raise ConfigError(
            f"precision=amp_fp8 needs an NVIDIA GPU of compute capability "
            f"{'.'.join(map(str, FP8_MIN_CAPABILITY))}+ (Ada, Hopper or newer) and this run is on "
            f"{device.name}: use precision=amp_bf16"
        )
    capability = torch.cuda.get_device_capability()
    if capability < FP8_MIN_CAPABILITY:
        raise ConfigError(
            f"precision=amp_fp8 needs compute capability {'.'.join(map(str, FP8_MIN_CAPABILITY))}+; "
            f"{torch.cuda.get_device_name()} has {'.'.join(map(str, capability))}: "
            "use precision=amp_bf16"
        )
    if importlib.util.find_spec("transformer_engine") is None:
        raise MissingDependencyError(
            "precision=amp_fp8 runs through NVIDIA TransformerEngine, which is not installed: "
            "pip install 'llm-foundry[te]' (or use precision=amp_bf16)"
        )


def runtime_precision(precision: str, device: Device) -> str:
    """The precision to run with: as configured, except fp32 on CPU (which has no AMP in Composer).

    Raises:
        ConfigError: for an unknown precision, or ``amp_fp8`` where it cannot run.
        MissingDependencyError: for ``amp_fp8`` without TransformerEngine.
    """
    choices = [p.value for p in Precision]
    if precision not in choices:
        suggestion = closest_match(precision, choices)
        hint = f"did you mean '{suggestion}'? " if suggestion else ""
        raise ConfigError(f"precision={precision!r} is unknown: {hint}choose one of {choices}")
    if precision == "amp_fp8":
        check_fp8_available(device)
        return precision
    if device.name == "cpu" and precision != "fp32":
        logger.warning("precision=%s is not available on CPU; training in fp32", precision)
        return "fp32"
    return precision


def run_name_of(run_name: str | None) -> str | None:
    """The run's name: the configured ``run_name``, else ``$RUN_NAME``."""
    return run_name or os.environ.get("RUN_NAME") or None


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """``{'a': {'b': 1}}`` as ``{'prefix/a/b': 1}``."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        flat.update(flatten(f"{prefix}/{key}", inner))
    return flat


def log_run_config(
    trainer: Trainer,
    logged_config: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    *,
    flat_metadata: bool = True,
) -> None:
    """Log the resolved config (when given) and the run's ``metadata`` as hyper-parameters.

    ``metadata`` is logged as ``metadata/<key>/...`` entries, or as one ``metadata`` entry
    when ``flat_metadata`` is false.
    """
    if logged_config is not None:
        trainer.logger.log_hyperparameters(dict(logged_config))
    if metadata:
        values = dict(metadata)
        trainer.logger.log_hyperparameters(
            flatten("metadata", values) if flat_metadata else {"metadata": values}
        )


def leave_process_group() -> None:
    """Leave the distributed process group, if one was started, once every rank got here.

    A rank that destroys the group while another is still in its last collective (a
    checkpoint barrier, say) would abort it.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
