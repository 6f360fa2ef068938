"""Parameter initialization schemes of MPT (``init_config.name``), with LLM Foundry's formulas.

Each linear weight is drawn by the named scheme; residual output projections (marked
``_is_residual``) are then divided by ``sqrt(2 * n_layers)`` when ``init_div_is_residual`` is
true (or by the given number); fused ``Wqkv`` weights are drawn per q/k/v slice; norms start at
weight 1, bias 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .configuration_mpt import MPTConfig

InitFn = Callable[[torch.Tensor], object]


def _is_loaded(param: torch.Tensor | None) -> bool:
    """True if ``transformers`` already filled this tensor from a checkpoint."""
    return param is None or bool(getattr(param, "_is_hf_initialized", False))


def _is_sharded(tensor: torch.Tensor) -> bool:
    """True for a distributed tensor (FSDP2 shards parameters as ``DTensor``)."""
    return (
        type(tensor).__name__ == "DTensor"
        or type(getattr(tensor, "data", None)).__name__ == "DTensor"
    )


def _weight_init_fn(config: MPTConfig) -> tuple[InitFn, float]:
    """The weight initializer named by ``init_config.name`` and its residual divisor."""
    cfg = config.init_config
    name = cfg["name"]
    div = cfg["init_div_is_residual"]
    if isinstance(div, bool):
        divisor = math.sqrt(2 * config.n_layers) if div else 1.0
    else:
        divisor = float(div)
    if name == "kaiming_normal_":
        fn: InitFn = partial(
            nn.init.kaiming_normal_,
            a=cfg["init_gain"],
            mode=cfg["fan_mode"],
            nonlinearity=cfg["init_nonlinearity"],
        )
    elif name == "kaiming_uniform_":
        fn = partial(
            nn.init.kaiming_uniform_,
            a=cfg["init_gain"],
            mode=cfg["fan_mode"],
            nonlinearity=cfg["init_nonlinearity"],
        )
    elif name == "xavier_normal_":
        fn = partial(nn.init.xavier_normal_, gain=cfg["init_gain"])
    elif name == "xavier_uniform_":
        fn = partial(nn.init.xavier_uniform_, gain=cfg["init_gain"])
    elif name == "baseline_":
        if cfg["init_std"] is None:
            raise ValueError(
                "model.init_config.init_std must be set when init_config.name is baseline_"
            )
        fn = partial(nn.init.normal_, mean=0.0, std=float(cfg["init_std"]))
    elif name == "small_init_":
        fn = partial(nn.init.normal_, mean=0.0, std=math.sqrt(2 / (5 * config.d_model)))
    elif name == "neox_init_":
        fn = partial(nn.init.normal_, mean=0.0, std=math.sqrt(2 / (5 * config.d_model)))
        divisor = config.n_layers / math.sqrt(10)
    else:
        raise ValueError(f"unknown init_config.name {name!r}")
    return fn, divisor


def _init_linear(module: nn.Linear, fn: InitFn, divisor: float) -> None:
    if not _is_loaded(module.weight):
        fused = getattr(module, "_fused", None)
        if fused is None or _is_sharded(module.weight):
            # A sharded (FSDP2 DTensor) weight cannot be narrowed across shards; drawing it
            # whole gives the same distribution for the fan_in schemes (q, k and v share
            # their input width) and differs only in the fan_out/xavier variants.
            fn(module.weight)
        else:
            dim, splits = fused
            bounds = [0, *splits, module.weight.shape[dim]]
            for start, end in itertools.pairwise(bounds):
                fn(module.weight.narrow(dim, start, end - start))
        if getattr(module, "_is_residual", False):
            module.weight.div_(divisor)
    if module.bias is not None and not _is_loaded(module.bias):
        nn.init.zeros_(module.bias)


def _init_embedding(module: nn.Embedding, fn: InitFn, config: MPTConfig) -> None:
    if _is_loaded(module.weight):
        return
    std = config.init_config["emb_init_std"]
    lim = config.init_config["emb_init_uniform_lim"]
    if std is not None:
        nn.init.normal_(module.weight, mean=0.0, std=float(std))
    elif lim is not None:
        low, high = (
            (-float(lim), float(lim))
            if isinstance(lim, (int, float))
            else (float(lim[0]), float(lim[1]))
        )
        nn.init.uniform_(module.weight, low, high)
    else:
        fn(module.weight)


@torch.no_grad()
def init_mpt_module(module: nn.Module, config: MPTConfig) -> None:
    """Initialize the parameters owned directly by ``module`` (not its children).

    Tensors that ``transformers`` marked as loaded from a checkpoint are left untouched.
    """
    fn, divisor = _weight_init_fn(config)
    if isinstance(module, nn.Linear):
        _init_linear(module, fn, divisor)
    elif isinstance(module, nn.Embedding):
        _init_embedding(module, fn, config)
    else:
        weight = getattr(module, "weight", None)
        bias = getattr(module, "bias", None)
        # Norm layers: every norm of MPT has a 1-D weight (and maybe a bias).
        if isinstance(weight, torch.Tensor) and weight.ndim == 1 and not _is_loaded(weight):
            nn.init.ones_(weight)
        if isinstance(bias, torch.Tensor) and bias.ndim == 1 and not _is_loaded(bias):
            nn.init.zeros_(bias)
