"""Turn a run config's ``fsdp_config`` / ``tp_config`` into Composer's ``parallelism_config``.

LLM Foundry YAMLs describe FSDP with FSDP1's keys (``sharding_strategy``, ``mixed_precision``,
``activation_checkpointing``, ``limit_all_gathers``, ...). We serve them with FSDP2
(``fully_shard``, DTensor parameters), which runs on CPU as well as GPU:

* ``sharding_strategy``: ``FULL_SHARD`` reshards parameters after the forward pass,
  ``SHARD_GRAD_OP`` keeps them gathered until the backward pass (ZeRO-2);
  ``HYBRID_SHARD`` / ``_HYBRID_SHARD_ZERO2`` shard within a node and replicate across nodes
  (a 2-D device mesh); ``NO_SHARD`` is plain data parallelism (Composer's DDP).
* ``mixed_precision`` (``PURE`` / ``DEFAULT`` / ``FULL``, or a mapping of dtypes), ``activation_checkpointing``,
  ``activation_cpu_offload``, ``state_dict_type`` (``full`` by default, as in LLM Foundry) and
  ``verbose`` carry over.
* FSDP1-only keys whose behaviour FSDP2 already has (``use_orig_params: true``,
  ``limit_all_gathers``, ``sync_module_states``, prefetch settings, ...) are accepted; one that
  asks for something FSDP2 does not do (``use_orig_params: false``, ``cpu_offload: true``,
  reentrant checkpointing) is named in one warning.

FSDP1 itself is used when ``FSDP_VERSION=1`` is set in the environment, on CUDA only (it has
no CPU support). On a single CPU process FSDP brings nothing and is dropped with one warning,
so a GPU YAML runs unchanged on a laptop.

``tp_config: {strategy, tensor_parallel_degree}`` asks for tensor parallelism (inside FSDP): the
layer plan comes from the ``tp_strategies`` registry entry named by ``strategy`` (``ffn``: see
``llmfoundry.tp``), built for the run's model. With a single process it is dropped with a
warning, as in LLM Foundry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from composer.utils.parallelism import FSDP2Config, FSDPConfig, TPConfig
from torch import nn
from torch.distributed.tensor.parallel.style import ParallelStyle

import llmfoundry.tp  # noqa: F401  (registration: tp_strategies)
from llmfoundry import registry
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.registry_utils import check_keys

logger = logging.getLogger(__name__)

SHARDING_STRATEGIES = (
    "FULL_SHARD",
    "SHARD_GRAD_OP",
    "HYBRID_SHARD",
    "_HYBRID_SHARD_ZERO2",
    "NO_SHARD",
)
MIXED_PRECISIONS = ("PURE", "DEFAULT", "FULL")
STATE_DICT_TYPES = ("full", "sharded", "local")
# FSDP1 keys and the value FSDP2 behaves as (None: any value behaves the same under FSDP2).
FSDP1_ONLY_KEYS: dict[str, Any] = {
    "use_orig_params": True,
    "limit_all_gathers": None,
    "sync_module_states": None,
    "forward_prefetch": None,
    "forward_prefetch_limit": None,
    "backward_prefetch": None,
    "backward_prefetch_limit": None,
    "auto_wrap": True,
    "cpu_offload": False,
    "activation_checkpointing_reentrant": False,
    "keep_low_precision_grads": False,
    "load_monolith_rank0_only": None,
    "data_parallel_shard_degree": None,
    "data_parallel_replicate_degree": None,
    "sharded_ckpt_prefix_dir": None,
    "te_checkpoint_wrapper": False,
    "te_shard_fp8_weight": False,
    "ignored_modules": None,
    "process_group": None,
    "load_planner": None,
    "save_planner": None,
}
FSDP_KEYS = sorted({f.name for f in fields(FSDPConfig)} - {"_device_mesh"})


def fsdp_version() -> int:
    """1 when ``FSDP_VERSION=1`` is set, else 2 (our default; Composer's own default is 1).

    Raises:
        ConfigError: on another value.
    """
    value = os.environ.get("FSDP_VERSION", "2").strip()
    if value not in ("1", "2"):
        raise ConfigError(f"FSDP_VERSION={value!r} in the environment; use 1 or 2")
    return int(value)


def check_fsdp_config(fsdp_config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the keys and values of ``fsdp_config``.

    Returns:
        A plain dict copy.

    Raises:
        ConfigError: naming an unknown key (with the closest one) or a bad value.
    """
    config = dict(fsdp_config)
    check_keys(config, FSDP_KEYS, "fsdp_config")
    choices = {
        "sharding_strategy": SHARDING_STRATEGIES,
        "mixed_precision": MIXED_PRECISIONS,
        "state_dict_type": STATE_DICT_TYPES,
    }
    for key, allowed in choices.items():
        if key in config:
            value = config[key]
            if key == "mixed_precision" and isinstance(value, Mapping):
                continue  # {param_dtype, reduce_dtype, buffer_dtype}: Composer reads it as is
            normalized = str(value).upper() if key != "state_dict_type" else value
            if normalized not in allowed:
                raise ConfigError(
                    f"fsdp_config.{key} is {value!r}; use one of {', '.join(allowed)}"
                )
            config[key] = normalized
    return config


def build_parallelism_config(
    fsdp_config: Mapping[str, Any] | None,
    tp_config: Mapping[str, Any] | None,
    device_name: str,
    world_size: int,
    local_world_size: int,
    model: nn.Module | None = None,
) -> dict[str, Any] | None:
    """Composer's ``parallelism_config`` for a run (see the module docstring).

    Args:
        fsdp_config: the run's ``fsdp_config`` section, or None.
        tp_config: the run's ``tp_config`` section, or None.
        device_name: Composer's device name (``cpu``, ``gpu``).
        world_size: processes in the run.
        local_world_size: processes on this node.
        model: the model a ``tp_config.strategy`` builds its layer plan for.

    Returns:
        ``{'fsdp': FSDP2Config | FSDPConfig, 'tp': TPConfig}`` entries, or None for none.

    Raises:
        ConfigError: on a bad key or value, FSDP1 off CUDA, or tensor parallelism without FSDP.
    """
    parallelism: dict[str, Any] = {}
    if fsdp_config is not None:
        config = check_fsdp_config(fsdp_config)
        fsdp = build_fsdp(config, device_name, world_size, local_world_size)
        if fsdp is not None:
            parallelism["fsdp"] = fsdp
    if tp_config is not None:
        check_tp_config(tp_config)
        if world_size == 1:
            logger.warning(
                "tp_config is ignored: tensor parallelism needs more than one process; launch "
                "with `composer -n N`"
            )
        elif "fsdp" not in parallelism:
            raise ConfigError(
                "tp_config needs fsdp_config too (Composer runs tensor parallelism inside FSDP)"
            )
        else:
            parallelism["tp"] = build_tp(tp_config, model)
    return parallelism or None


def fsdp_shards_model(
    fsdp_config: Mapping[str, Any] | None, device_name: str, world_size: int
) -> bool:
    """Whether ``build_parallelism_config`` will shard the model with FSDP (see ``build_fsdp``)."""
    if fsdp_config is None or (world_size == 1 and device_name == "cpu"):
        return False
    return str(fsdp_config.get("sharding_strategy", "FULL_SHARD")).upper() != "NO_SHARD"


def build_fsdp(
    config: dict[str, Any], device_name: str, world_size: int, local_world_size: int
) -> FSDP2Config | FSDPConfig | None:
    """The FSDP config object for a validated ``fsdp_config`` (None: no FSDP)."""
    strategy = config.pop("sharding_strategy", "FULL_SHARD")
    if world_size == 1 and device_name == "cpu":
        logger.warning(
            "fsdp_config is ignored: this run has a single CPU process, where sharding brings "
            "nothing; launch with `composer -n N` to shard over N processes"
        )
        return None
    if strategy == "NO_SHARD":
        logger.info("fsdp_config.sharding_strategy NO_SHARD: training with plain data parallelism")
        return None
    if fsdp_version() == 1:
        if device_name != "gpu":
            raise ConfigError(
                "FSDP_VERSION=1 asks for FSDP1, which needs CUDA GPUs; unset it to use FSDP2"
            )
        return FSDPConfig(**config, sharding_strategy=strategy)
    config.setdefault("state_dict_type", "full")
    ignored = [
        f"{key}: {config[key]!r}"
        for key, behaves_as in FSDP1_ONLY_KEYS.items()
        if key in config and behaves_as is not None and config[key] != behaves_as
    ]
    if ignored:
        logger.warning(
            "fsdp_config: FSDP2 does not do %s; these settings are ignored", ", ".join(ignored)
        )
    kept = {k: v for k, v in config.items() if k not in FSDP1_ONLY_KEYS}
    fsdp2 = FSDP2Config(
        reshard_after_forward=strategy in ("FULL_SHARD", "HYBRID_SHARD"),
        **kept,
    )
    if strategy in ("HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"):
        fsdp2.device_mesh = hybrid_mesh(device_name, world_size, local_world_size)
    return fsdp2


def hybrid_mesh(device_name: str, world_size: int, local_world_size: int) -> Any:
    """A (nodes, processes per node) device mesh: replicate across nodes, shard within one.

    Raises:
        ConfigError: if the processes do not fill whole nodes.
    """
    from torch.distributed.device_mesh import init_device_mesh

    if world_size % local_world_size != 0:
        raise ConfigError(
            f"fsdp_config.sharding_strategy HYBRID_SHARD needs the same number of processes on "
            f"every node ({world_size} processes, {local_world_size} on this node)"
        )
    device_type = "cuda" if device_name == "gpu" else "cpu"
    return init_device_mesh(
        device_type,
        (world_size // local_world_size, local_world_size),
        mesh_dim_names=("dp_replicate", "dp_shard"),
    )


TP_KEYS = sorted({f.name for f in fields(TPConfig)} - {"device_mesh"} | {"strategy"})


def check_tp_config(tp_config: Mapping[str, Any]) -> None:
    """Validate ``tp_config``'s keys and its ``strategy`` name.

    Raises:
        ConfigError: naming an unknown key or strategy.
    """
    check_keys(tp_config, TP_KEYS, "tp_config")
    if "strategy" in tp_config:
        registry.tp_strategies.get(str(tp_config["strategy"]))


def build_tp_strategies(name: str, model: nn.Module) -> dict[str, ParallelStyle]:
    """The layer plan of the ``tp_strategies`` entry ``name`` for ``model``.

    Raises:
        ConfigError: on an unknown strategy name.
    """
    return registry.tp_strategies.get(name)(model=model)


def build_tp(tp_config: Mapping[str, Any], model: nn.Module | None = None) -> TPConfig:
    """Composer's ``TPConfig`` from ``tp_config`` (``strategy`` or ``layer_plan``,
    ``tensor_parallel_degree``).

    Raises:
        ConfigError: naming an unknown key or strategy, or when neither ``strategy`` nor
            ``layer_plan`` (or both) is given.
    """
    check_tp_config(tp_config)
    options = dict(tp_config)
    strategy = options.pop("strategy", None)
    if (strategy is None) == ("layer_plan" not in options):
        raise ConfigError(
            "tp_config needs a strategy (a tp_strategies entry such as 'ffn') and "
            "tensor_parallel_degree; give strategy or layer_plan, not both"
        )
    if strategy is not None:
        if model is None:
            raise ValueError("tp_config.strategy builds its layer plan for a model; pass model")
        options["layer_plan"] = build_tp_strategies(str(strategy), model)
    return TPConfig(**options)
