"""Config transforms: functions ``(dict) -> dict`` applied to a raw training config before it is
validated, and the built-in one, ``update_batch_size_info``.

Transforms live in the ``config_transforms`` registry. The config loader applies every
registered transform, in registration order, to the resolved train or eval config (after the
``code_paths`` files are imported, so those may register transforms too) and then validates the
result, so a transform may add, rename or drop keys.

``update_batch_size_info`` holds the batch-size arithmetic (the one place for it): from
``global_train_batch_size`` (or ``device_train_batch_size``) and the number of processes it sets
``n_gpus``, ``device_train_batch_size``, ``device_train_microbatch_size``,
``device_train_grad_accum`` and, when unset, ``device_eval_batch_size``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from llmfoundry import registry
from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.exceptions import ConfigError

logger = logging.getLogger(__name__)

ConfigTransform = Callable[[dict[str, Any]], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class BatchSizeInfo:
    """A process's share of the global batch."""

    device_train_batch_size: int
    device_train_microbatch_size: int | Literal["auto"]
    # Microbatches per device batch, or 'auto' when Composer searches for the microbatch size.
    device_train_grad_accum: int | Literal["auto"]


def batch_size_info(
    global_batch_size: int | None,
    device_batch_size: int | None,
    device_microbatch_size: int | str,
    world_size: int,
) -> BatchSizeInfo:
    """Split the global batch over ``world_size`` processes.

    Args:
        global_batch_size: ``global_train_batch_size`` (None: ``device_batch_size`` per process).
        device_batch_size: ``device_train_batch_size`` as configured, or None.
        device_microbatch_size: an integer, or ``'auto'``; a microbatch larger than the device
            batch is reduced to it (with a warning), as LLM Foundry does.
        world_size: the number of processes.

    Raises:
        ConfigError: if neither batch size is set, they disagree, the global batch does not
            divide evenly, or the microbatch is neither ``'auto'`` nor a divisor of the batch.
    """
    check_value(global_batch_size, PositiveInt | None, "global_train_batch_size")
    check_value(device_batch_size, PositiveInt | None, "device_train_batch_size")
    global_batch, device_batch = global_batch_size, device_batch_size
    if global_batch is None:
        if device_batch is None:
            raise ConfigError(
                "set global_train_batch_size (split over the processes) or device_train_batch_size"
            )
        global_batch = device_batch * world_size
    if global_batch % world_size != 0:
        raise ConfigError(
            f"global_train_batch_size={global_batch} must be divisible by the number of "
            f"processes ({world_size})"
        )
    per_device = global_batch // world_size
    if device_batch is not None and device_batch != per_device:
        raise ConfigError(
            f"device_train_batch_size={device_batch} disagrees with global_train_batch_size="
            f"{global_batch} over {world_size} processes ({per_device} each); set only one"
        )
    micro = device_microbatch_size
    if micro == "auto":
        return BatchSizeInfo(per_device, "auto", "auto")
    if isinstance(micro, bool) or not isinstance(micro, int):
        raise ConfigError(
            f"device_train_microbatch_size must be an integer or 'auto', got {micro!r}"
        )
    if micro > per_device:
        logger.warning(
            "device_train_microbatch_size=%d is larger than the device batch (%d); using %d",
            micro,
            per_device,
            per_device,
        )
        micro = per_device
    if micro <= 0 or per_device % micro != 0:
        raise ConfigError(
            f"device_train_microbatch_size={micro} must be a positive divisor of the device "
            f"batch ({per_device})"
        )
    return BatchSizeInfo(per_device, micro, math.ceil(per_device / micro))


def calculate_batch_size_info(
    global_batch_size: int, device_microbatch_size: int | str
) -> tuple[int, int | str, int | str]:
    """LLM Foundry's spelling: ``(device_batch_size, device_microbatch_size, grad_accum)`` for
    this run's number of processes (``WORLD_SIZE``)."""
    from composer.utils import dist

    info = batch_size_info(global_batch_size, None, device_microbatch_size, dist.get_world_size())
    return (
        info.device_train_batch_size,
        info.device_train_microbatch_size,
        info.device_train_grad_accum,
    )


def update_batch_size_info(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``update_batch_size_info`` transform: fill in the per-process batch sizes.

    Sets ``n_gpus`` (the number of processes), ``device_train_batch_size``,
    ``device_train_microbatch_size``, ``device_train_grad_accum`` and, when unset,
    ``device_eval_batch_size`` (the microbatch size, or 1 with ``'auto'``).

    A config with neither ``global_train_batch_size`` nor ``device_train_batch_size`` is
    returned as is: validation then names what is wrong (a misspelled key, say).

    Raises:
        ConfigError: see :func:`batch_size_info`.
    """
    if cfg.get("global_train_batch_size") is None and cfg.get("device_train_batch_size") is None:
        return cfg
    from composer.utils import dist  # here: reading a config must not import Composer

    world_size = dist.get_world_size()
    info = batch_size_info(
        cfg.get("global_train_batch_size"),
        cfg.get("device_train_batch_size"),
        cfg.get("device_train_microbatch_size", "auto"),
        world_size,
    )
    cfg["n_gpus"] = world_size
    cfg["device_train_batch_size"] = info.device_train_batch_size
    cfg["device_train_microbatch_size"] = info.device_train_microbatch_size
    cfg["device_train_grad_accum"] = info.device_train_grad_accum
    if cfg.get("device_eval_batch_size") is None:
        micro = info.device_train_microbatch_size
        cfg["device_eval_batch_size"] = 1 if micro == "auto" else micro
    return cfg


def apply_transforms_to_config(
    cfg: dict[str, Any], transforms: Sequence[ConfigTransform | str] | str | None
) -> dict[str, Any]:
    """Apply config transforms in order.

    Args:
        cfg: the raw (resolved) config.
        transforms: registered names and/or functions, ``'all'`` for every registered
            transform in registration order, or None / an empty list for none.

    Returns:
        The transformed config.

    Raises:
        ConfigError: on an unknown transform name, an entry that is neither a name nor a
            function, or a transform that does not return a mapping.
    """
    if transforms is None:
        return cfg
    if isinstance(transforms, str):
        if transforms != "all":
            raise ConfigError(
                f"transforms={transforms!r}: give a list of transform names or functions, or 'all'"
            )
        functions: list[ConfigTransform] = list(registry.config_transforms.get_all().values())
    else:
        functions = []
        for entry in transforms:
            if isinstance(entry, str):
                functions.append(registry.config_transforms.get(entry))
            elif callable(entry):
                functions.append(entry)
            else:
                raise ConfigError(f"config transform {entry!r} is neither a name nor a function")
    for function in functions:
        result = function(cfg)
        if not isinstance(result, dict):
            name = getattr(function, "__name__", repr(function))
            raise ConfigError(
                f"config transform '{name}' returned {type(result).__name__}, not the config dict"
            )
        cfg = result
    return cfg


registry.config_transforms.register("update_batch_size_info", func=update_batch_size_info)
