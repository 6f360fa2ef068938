"""The ``ffn_config`` keys of the mixture-of-experts FFNs (``torch_dmoe``, ``mb_moe``, ``mb_dmoe``).

LLM Foundry passes an MoE ``ffn_config`` to MegaBlocks' ``Arguments`` (its ``torch_dmoe`` takes
a subset), so LLM Foundry YAMLs carry MegaBlocks' key names. Every key below keeps that meaning;
the keys that select MegaBlocks kernels (``mlp_impl``, ``memory_optimized_mlp``) are accepted and
change nothing in the results. A few MegaBlocks features are refused with a one-line error
(``REFUSED``), as are keys that only hold Python objects there (process groups, init callables).

This module imports no torch: ``MPTConfig`` checks these keys when a config is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .config_defaults import MPTConfigError

MOE_FFN_TYPES = ("torch_dmoe", "mb_moe", "mb_dmoe")
ROUTER_ACTS = ("softmax", "sigmoid")
MLP_TYPES = ("mlp", "glu")
MLP_IMPLS = ("sparse", "grouped")

# key -> (type, default). MegaBlocks' defaults, plus ``moe_world_size`` and ``lbl_process_group``
# (LLM Foundry's) and ``moe_router_act`` (ours: the router's softmax or sigmoid).
MOE_CONFIG_TYPES: dict[str, Any] = {
    "moe_num_experts": int,
    "moe_top_k": int,
    "moe_capacity_factor": float,
    "moe_normalize_expert_weights": float | None,
    "moe_loss_weight": float,
    "moe_zloss_weight": float,
    "moe_jitter_eps": float | None,
    "moe_lbl_in_fp32": bool,
    "moe_zloss_in_fp32": bool,
    "moe_router_act": str,
    "mlp_type": str,
    "mlp_impl": str,
    "memory_optimized_mlp": bool,
    "uniform_expert_assignment": bool,
    "moe_world_size": int,
    "moe_weight_parallelism": bool,
    "moe_expert_model_parallelism": bool,
    "lbl_process_group": str | int | None,
    "device_mesh": list[int] | None,
    "fp16": bool,
    "bf16": bool,
    "num_layers": int | None,
    "bias": bool | None,
    "return_bias": bool,
    "pipeline_model_parallel_size": int,
    "num_layers_per_virtual_pipeline_stage": int | None,
    "shared_expert": bool,
}

MOE_CONFIG_DEFAULTS: dict[str, Any] = {
    "moe_num_experts": 1,
    "moe_top_k": 1,
    "moe_capacity_factor": 1.0,
    "moe_normalize_expert_weights": None,
    "moe_loss_weight": 0.1,
    "moe_zloss_weight": 0.0,
    "moe_jitter_eps": None,
    "moe_lbl_in_fp32": False,
    "moe_zloss_in_fp32": False,
    "moe_router_act": "softmax",
    "mlp_type": "mlp",
    "mlp_impl": "sparse",
    "memory_optimized_mlp": False,
    "uniform_expert_assignment": False,
    "moe_world_size": 1,
    "moe_weight_parallelism": False,
    "moe_expert_model_parallelism": False,
    "lbl_process_group": None,
    "device_mesh": None,
    "fp16": False,
    "bf16": False,
    "num_layers": None,
    "bias": None,
    "return_bias": False,
    "pipeline_model_parallel_size": 1,
    "num_layers_per_virtual_pipeline_stage": None,
    "shared_expert": False,
}

# MegaBlocks features we do not implement: key -> (the only value accepted, why).
REFUSED: dict[str, tuple[Any, str]] = {
    "moe_weight_parallelism": (False, "weight parallelism is not implemented; shard with FSDP"),
    "pipeline_model_parallel_size": (1, "pipeline parallelism is not implemented"),
    "num_layers_per_virtual_pipeline_stage": (None, "pipeline parallelism is not implemented"),
    "shared_expert": (False, "shared experts are not implemented"),
    "return_bias": (False, "the MPT block adds the expert bias itself"),
}

# MegaBlocks ``Arguments`` that hold Python objects; a YAML cannot set them meaningfully.
OBJECT_KEYS = (
    "activation_fn",
    "init_method",
    "output_layer_init_method",
    "expert_parallel_group",
    "weight_parallel_group",
    "fc_cls",
    "fc_kwargs",
)


@dataclasses.dataclass(frozen=True)
class MoEOptions:
    """What an MoE FFN needs from its ``ffn_config`` (see ``moe_options``).

    Attributes:
        num_experts: experts per layer (``moe_num_experts``).
        top_k: experts each token goes to (``moe_top_k``).
        ffn_hidden_size: each expert's hidden width.
        mlp_type: ``mlp`` (up, activation, down) or ``glu`` (gated).
        dropless: every token reaches its experts (``torch_dmoe``, ``mb_dmoe``); False for
            ``mb_moe``, which drops assignments past each expert's capacity.
        capacity_factor: ``mb_moe``'s capacity, as a multiple of an even share.
        normalize_expert_weights: divide the top-k weights by their p-norm with this p.
        jitter_eps: multiply the router's input by noise in ``[1 - eps, 1 + eps]`` in training.
        uniform_expert_assignment: route token ``i``'s slot ``j`` to ``(i * k + j) % E``
            (a load-balance test setting; the weights still come from the router).
        router_act: ``softmax`` or ``sigmoid`` over the router logits.
        loss_weight: the load-balancing loss coefficient (0: no loss).
        zloss_weight: the router z-loss coefficient (0: no loss).
        lbl_in_fp32: compute the balancing loss in float32.
        zloss_in_fp32: compute the z-loss in float32.
        world_size: the expert-parallel group size (``moe_world_size``).
        lbl_process_group: ``None``, ``expert_group``, ``global_group`` or a group size: the
            ranks whose token counts the balancing loss averages.
        stacked_layout: the weights as MegaBlocks' dMoE keeps them, ``(E * F, H)`` each (True),
            or as its MoE does, ``w1 (E, H, F)`` and ``w2 (E, F, H)`` (False, ``mb_moe``).
    """

    num_experts: int
    top_k: int
    ffn_hidden_size: int
    mlp_type: str = "mlp"
    dropless: bool = True
    capacity_factor: float = 1.0
    normalize_expert_weights: float | None = None
    jitter_eps: float | None = None
    uniform_expert_assignment: bool = False
    router_act: str = "softmax"
    loss_weight: float = 0.1
    zloss_weight: float = 0.0
    lbl_in_fp32: bool = False
    zloss_in_fp32: bool = False
    world_size: int = 1
    lbl_process_group: str | int | None = None
    stacked_layout: bool = True


def _fail(key: str, value: Any, allowed: str) -> MPTConfigError:
    return MPTConfigError(f"model.ffn_config.{key}={value!r} is not supported: {allowed}")


def _check_values(cfg: Mapping[str, Any]) -> None:
    """Refuse values outside each key's range (types are checked by ``MOE_CONFIG_TYPES``)."""
    for key, (accepted, why) in REFUSED.items():
        if cfg[key] != accepted:
            raise _fail(key, cfg[key], f"only {accepted!r} is accepted ({why})")
    for key in OBJECT_KEYS:
        if key in cfg:
            raise _fail(key, cfg[key], "it holds a Python object in MegaBlocks; remove the key")
    checks = {
        "moe_router_act": (cfg["moe_router_act"] in ROUTER_ACTS, f"one of {ROUTER_ACTS}"),
        "mlp_type": (cfg["mlp_type"] in MLP_TYPES, f"one of {MLP_TYPES}"),
        "mlp_impl": (cfg["mlp_impl"] in MLP_IMPLS, f"one of {MLP_IMPLS}"),
        "moe_num_experts": (cfg["moe_num_experts"] >= 1, "a positive integer"),
        "moe_top_k": (
            1 <= cfg["moe_top_k"] <= cfg["moe_num_experts"],
            f"between 1 and moe_num_experts={cfg['moe_num_experts']}",
        ),
        "moe_capacity_factor": (cfg["moe_capacity_factor"] > 0, "a positive number"),
        "moe_loss_weight": (cfg["moe_loss_weight"] >= 0, "zero or positive"),
        "moe_zloss_weight": (cfg["moe_zloss_weight"] >= 0, "zero or positive"),
        "moe_world_size": (
            cfg["moe_world_size"] >= 1 and cfg["moe_num_experts"] % cfg["moe_world_size"] == 0,
            f"a positive divisor of moe_num_experts={cfg['moe_num_experts']}",
        ),
    }
    for key, (ok, allowed) in checks.items():
        if not ok:
            raise _fail(key, cfg[key], f"use {allowed}")
    eps = cfg["moe_jitter_eps"]
    if eps is not None and not 0 <= eps < 1:
        raise _fail("moe_jitter_eps", eps, "use null or a number in [0, 1)")
    group = cfg["lbl_process_group"]
    if isinstance(group, str) and group not in ("expert_group", "global_group"):
        raise _fail("lbl_process_group", group, "use null, expert_group, global_group or a size")
    mesh = cfg["device_mesh"]
    if mesh is not None and len(mesh) != 1:
        raise _fail("device_mesh", mesh, "use null or one number (the ranks that shard)")


def moe_options(ffn_config: Mapping[str, Any], d_model: int, expansion_ratio: float) -> MoEOptions:
    """Read an MoE ``ffn_config`` (with ``ffn_type`` one of ``MOE_FFN_TYPES``).

    Args:
        ffn_config: the model's ``ffn_config``; missing MoE keys take ``MOE_CONFIG_DEFAULTS``.
        d_model: the model width.
        expansion_ratio: each expert's hidden width as a multiple of ``d_model``, unless
            ``ffn_config.ffn_hidden_size`` is set.

    Raises:
        MPTConfigError: a value out of range or a MegaBlocks feature not implemented here,
            naming the key.
    """
    cfg = {**MOE_CONFIG_DEFAULTS, **{k: v for k, v in ffn_config.items() if v is not None}}
    _check_values(cfg)
    hidden = ffn_config.get("ffn_hidden_size")
    norm = cfg["moe_normalize_expert_weights"]
    return MoEOptions(
        num_experts=cfg["moe_num_experts"],
        top_k=cfg["moe_top_k"],
        ffn_hidden_size=int(hidden) if hidden is not None else int(d_model * expansion_ratio),
        mlp_type=cfg["mlp_type"],
        dropless=ffn_config.get("ffn_type") != "mb_moe",
        capacity_factor=float(cfg["moe_capacity_factor"]),
        normalize_expert_weights=float(norm) if norm else None,
        jitter_eps=cfg["moe_jitter_eps"],
        uniform_expert_assignment=cfg["uniform_expert_assignment"],
        router_act=cfg["moe_router_act"],
        loss_weight=float(cfg["moe_loss_weight"]),
        zloss_weight=float(cfg["moe_zloss_weight"]),
        lbl_in_fp32=cfg["moe_lbl_in_fp32"],
        zloss_in_fp32=cfg["moe_zloss_in_fp32"],
        world_size=cfg["moe_world_size"],
        lbl_process_group=cfg["lbl_process_group"],
        stacked_layout=ffn_config.get("ffn_type") != "mb_moe",
    )
