"""The base class of callbacks that are built with the whole run config."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from composer.core import Callback


class CallbackWithConfig(Callback, abc.ABC):
    """A callback registered in ``callbacks_with_config``: built as ``cls(train_config, **kwargs)``.

    ``train_config`` is the resolved run config as a dict (with the per-device batch sizes the
    trainer computed); the remaining keyword arguments are the callback's YAML keys.
    """

    @abc.abstractmethod
    def __init__(self, train_config: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        del train_config, args, kwargs
