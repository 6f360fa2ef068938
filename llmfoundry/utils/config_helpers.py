"""Small config helpers that LLM Foundry plug-ins call by name from ``llmfoundry.utils.config_utils``.

Our own commands validate configs as dataclasses (:mod:`llmfoundry.utils.config_utils`); these
work on the plain (or OmegaConf) mappings that plug-in code passes around.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from llmfoundry.utils.constants import INIT_DEVICES
from llmfoundry.utils.exceptions import ConfigError, did_you_mean

if TYPE_CHECKING:
    from composer.loggers import Logger

logger = logging.getLogger(__name__)


def check_init_device(init_device: str) -> None:
    """Fail, naming ``model.init_device`` and the choices, on a device the builders do not take.

    Raises:
        ConfigError: unless ``init_device`` is one of :data:`INIT_DEVICES`.
    """
    if init_device not in INIT_DEVICES:
        raise ConfigError(
            f"model.init_device={init_device!r} is not supported"
            f"{did_you_mean(init_device, INIT_DEVICES)} (choose one of {', '.join(INIT_DEVICES)})"
        )


def pop_config(
    cfg: MutableMapping[str, Any],
    key: str,
    must_exist: bool = True,
    default_value: Any = None,
    convert: bool = False,
) -> Any:
    """Remove ``key`` from ``cfg`` and return its value (a null value counts as absent).

    Args:
        cfg: the config mapping (a dict or an OmegaConf ``DictConfig``).
        key: the key to take out.
        must_exist: fail when the key is absent; otherwise return ``default_value``.
        default_value: what an absent key gives when ``must_exist`` is false.
        convert: turn an OmegaConf mapping or list value into plain Python containers.

    Raises:
        ConfigError: if the key is absent and must exist, or ``convert`` meets a plain value.
    """
    value = cfg.pop(key, None)
    if value is None:
        if must_exist:
            raise ConfigError(f"the config needs the key '{key}'; add it to the YAML")
        return default_value
    if not convert:
        return value
    if not isinstance(value, DictConfig | ListConfig):
        raise ConfigError(
            f"'{key}' is a {type(value).__name__}, which cannot be converted to a mapping or "
            "list; give it a mapping or a list in the YAML"
        )
    return OmegaConf.to_container(value, resolve=True)


def process_init_device(
    model_cfg: MutableMapping[str, Any],
    fsdp_config: MutableMapping[str, Any] | None = None,
    tp_config: MutableMapping[str, Any] | None = None,
) -> AbstractContextManager[Any]:
    """Check ``model_cfg['init_device']`` against the run's parallelism.

    ``meta`` needs sharding (FSDP or tensor parallelism): without it the model is built on
    ``cpu`` instead, with a warning. ``mixed`` (weights on rank 0, broadcast to the others)
    needs FSDP and turns on its ``sync_module_states``. Our model builders place their weights
    themselves, so the returned context adds nothing around the build.

    Raises:
        ConfigError: on an unknown device, or ``mixed`` without an FSDP config.
    """
    device = model_cfg.get("init_device", "cpu")
    check_init_device(device)
    if device == "meta" and fsdp_config is None and tp_config is None:
        logger.warning(
            "model.init_device='meta' needs FSDP or tensor parallelism; building on 'cpu'"
        )
        model_cfg["init_device"] = "cpu"
    if device == "mixed":
        if fsdp_config is None:
            raise ConfigError(
                "model.init_device='mixed' needs FSDP; add an fsdp_config or use 'cpu'"
            )
        fsdp_config["sync_module_states"] = True
    return nullcontext()


def log_config(run_logger: Logger, cfg: Any) -> None:
    """Print ``cfg`` as YAML and log it as the run's hyper-parameters (W&B, MLflow, ...)."""
    container: Any = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    print(OmegaConf.to_yaml(container))
    run_logger.log_hyperparameters({str(key): value for key, value in container.items()})
