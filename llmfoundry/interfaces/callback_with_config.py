"""The base class of callbacks that are built with the whole run config."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from composer.core import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from llmfoundry.utils.exceptions import ConfigError


class CallbackWithConfig(Callback, abc.ABC):
    """A callback registered in ``callbacks_with_config``: built as ``cls(train_config, **kwargs)``.

    ``train_config`` is the resolved run config as a dict (with the per-device batch sizes the
    trainer computed); the remaining keyword arguments are the callback's YAML keys.
    """

    @abc.abstractmethod
    def __init__(self, train_config: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        del train_config, args, kwargs


def plain(value: Any) -> Any:
    """``value`` with OmegaConf containers and other mappings/sequences turned into dict/list
    (a copy: the caller may change it)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def train_loader_section(train_config: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A plain copy of the run config's ``train_loader`` section, for a callback that rebuilds
    the train loader.

    Raises:
        ConfigError: naming the callback's ``key`` if the run config has no such section.
    """
    loader = plain(train_config.get("train_loader"))
    if not isinstance(loader, dict):
        raise ConfigError(f"{key} needs the run's train_loader section (the run config has none)")
    return loader
