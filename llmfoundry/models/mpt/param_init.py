"""Parameter initialization schemes of MPT (``init_config.name``), with LLM Foundry's formulas.

Each scheme is registered under LLM Foundry's name as its ``param_init_fns`` are, and called
the same way: ``fn(module=, n_layers=, d_model=, **init_config)`` on one module at a time. A
scheme draws each weight with its initializer through the *module init functions*
(``module_init_fns``: ``fc``, ``embedding``, ``norm``, ``multihead_attention``,
``te_layernorm_mlp``, ``moe``, then any a plug-in registers), the first of which that handles the
module wins. Residual output projections (marked ``_is_residual``) are then divided by
``sqrt(2 * n_layers)`` when ``init_div_is_residual`` is true (or by the given number); fused
``Wqkv`` weights are drawn per q/k/v slice; norms start at weight 1, bias 0. ``default_`` runs
each module's own ``reset_parameters`` (PyTorch's default init).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import torch
from torch import nn

from .config_layers import find_layer
from .configuration_mpt import MPTConfig
from .fc import FUSED_MARK, RESIDUAL_MARK
from .layer_table import builtin_layers, external_layers, register_builtin
from .moe import ExpertWeights
from .sharded_init import is_loaded

InitFn = Callable[[torch.Tensor], object]


def _is_sharded(tensor: torch.Tensor) -> bool:
    """True for a distributed tensor (FSDP2 shards parameters as ``DTensor``)."""
    return (
        type(tensor).__name__ == "DTensor"
        or type(getattr(tensor, "data", None)).__name__ == "DTensor"
    )


def _is_te(module: nn.Module, class_name: str) -> bool:
    """Whether ``module`` is TransformerEngine's ``class_name`` (checked without importing TE)."""
    cls = type(module)
    return cls.__name__ == class_name and cls.__module__.startswith("transformer_engine")


def residual_divisor(init_div_is_residual: bool | float | str, n_layers: int) -> float:
    """What residual projections are divided by: ``sqrt(2 * n_layers)`` for True, 1 for False."""
    if isinstance(init_div_is_residual, bool):
        return math.sqrt(2 * n_layers) if init_div_is_residual else 1.0
    try:
        return float(init_div_is_residual)
    except ValueError:
        raise ValueError(
            f"model.init_config.init_div_is_residual={init_div_is_residual!r} must be a bool or a number"
        ) from None


def _draw(weight: torch.Tensor, fused: Any, init_fn_: InitFn) -> None:
    """Draw ``weight`` whole, or slice by slice for a fused weight (``_fused = (dim, splits)``)."""
    if fused is None or _is_sharded(weight):
        # A sharded (FSDP2 DTensor) weight cannot be narrowed across shards; drawing it whole
        # gives the same distribution for the fan_in schemes (q, k and v share their input
        # width) and differs only in the fan_out/xavier variants.
        init_fn_(weight)
        return
    dim, splits = fused
    bounds = [0, *splits, weight.shape[dim]]
    for start, end in itertools.pairwise(bounds):
        init_fn_(weight.narrow(dim, start, end - start))


@torch.no_grad()
def fc_init(
    module: nn.Module,
    init_fn_: InitFn,
    init_div_is_residual: bool | float | str = True,
    div_is_residual: float = 1.0,
    **kwargs: Any,
) -> bool:
    """Linear layers (``torch`` and TE's): the scheme's weights, zero biases."""
    del kwargs
    if not (isinstance(module, nn.Linear) or _is_te(module, "Linear")):
        return False
    weight, bias = cast(torch.Tensor, module.weight), module.bias
    if not is_loaded(weight):
        _draw(weight, getattr(module, FUSED_MARK, None), init_fn_)
        if init_div_is_residual is not False and getattr(module, RESIDUAL_MARK, False):
            weight.div_(div_is_residual)
    if isinstance(bias, torch.Tensor) and not is_loaded(bias):
        nn.init.zeros_(bias)
    return True


@torch.no_grad()
def embedding_init(
    module: nn.Module,
    init_fn_: InitFn,
    emb_init_std: float | None = None,
    emb_init_uniform_lim: float | list[float] | tuple[float, float] | None = None,
    **kwargs: Any,
) -> bool:
    """Embeddings: ``N(0, emb_init_std)``, ``U(lim)`` or the scheme's initializer."""
    del kwargs
    if not isinstance(module, nn.Embedding):
        return False
    if is_loaded(module.weight):
        return True
    if emb_init_std is not None:
        nn.init.normal_(module.weight, mean=0.0, std=float(emb_init_std))
    elif emb_init_uniform_lim is not None:
        lim = emb_init_uniform_lim
        low, high = (
            (-float(lim), float(lim))
            if isinstance(lim, int | float)
            else (float(lim[0]), float(lim[1]))
        )
        nn.init.uniform_(module.weight, low, high)
    else:
        init_fn_(module.weight)
    if module.padding_idx is not None:
        module.weight[module.padding_idx].fill_(0)
    return True


@torch.no_grad()
def norm_init(module: nn.Module, **kwargs: Any) -> bool:
    """Norm layers (every module whose own parameters are 1-D ``weight``/``bias``): 1 and 0."""
    del kwargs
    own = dict(module.named_parameters(recurse=False))
    if not own or set(own) - {"weight", "bias"} or any(p.ndim != 1 for p in own.values()):
        return False
    if "weight" in own and not is_loaded(own["weight"]):
        nn.init.ones_(own["weight"])
    if "bias" in own and not is_loaded(own["bias"]):
        nn.init.zeros_(own["bias"])
    return True


@torch.no_grad()
def multihead_attention_init(
    module: nn.Module,
    init_fn_: InitFn,
    d_model: int | None = None,
    init_div_is_residual: bool | float | str = True,
    div_is_residual: float = 1.0,
    **kwargs: Any,
) -> bool:
    """``torch.nn.MultiheadAttention``: q, k and v drawn separately, zero biases."""
    del d_model, kwargs
    if not isinstance(module, nn.MultiheadAttention):
        return False
    if module.in_proj_weight is not None:
        width = module.embed_dim
        _draw(module.in_proj_weight, (0, [width, 2 * width]), init_fn_)
    else:
        for weight in (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight):
            init_fn_(weight)
    for bias in (module.in_proj_bias, module.bias_k, module.bias_v):
        if bias is not None:
            nn.init.zeros_(bias)
    fc_init(module.out_proj, init_fn_, init_div_is_residual, div_is_residual)
    return True


@torch.no_grad()
def te_layernorm_mlp_init(
    module: nn.Module, init_fn_: InitFn, div_is_residual: float = 1.0, **kwargs: Any
) -> bool:
    """TransformerEngine's ``LayerNormMLP`` (``te_ln_mlp``): norm 1/0, fc weights, fc2 divided."""
    del kwargs
    if not _is_te(module, "LayerNormMLP"):
        return False
    for name, fill in (("layer_norm_weight", 1.0), ("layer_norm_bias", 0.0)):
        tensor = getattr(module, name, None)
        if isinstance(tensor, torch.Tensor):
            nn.init.constant_(tensor, fill)
    for name in ("fc1", "fc2"):
        init_fn_(getattr(module, f"{name}_weight"))
        bias = getattr(module, f"{name}_bias", None)
        if isinstance(bias, torch.Tensor):
            nn.init.zeros_(bias)
    cast(torch.Tensor, module.fc2_weight).div_(div_is_residual)
    return True


@torch.no_grad()
def moe_init(
    module: nn.Module,
    init_fn_: InitFn,
    init_div_is_residual: bool | float | str = True,
    div_is_residual: float = 1.0,
    **kwargs: Any,
) -> bool:
    """The experts' weights of an MoE FFN (``ExpertWeights``): each expert's matrices drawn
    alone, in ``nn.Linear`` orientation (so its fans are its own), its down projection
    (``w2``) then divided like any residual projection. The router is an ``nn.Linear``
    (``fc_init``) and the experts' bias a 1-D ``bias`` (``norm_init``: zeros)."""
    del kwargs
    if not isinstance(module, ExpertWeights):
        return False
    loaded = {id(p) for p in module.parameters(recurse=False) if is_loaded(p)}
    if len(loaded) == len(list(module.parameters(recurse=False))):
        return True
    divide = init_div_is_residual is not False
    for param_name in ("w1", "v1", "w2"):
        param = getattr(module, param_name)
        if param is None or id(param) in loaded:
            continue
        for view, is_residual in _expert_views(module, param_name):
            init_fn_(view)
            if divide and is_residual:
                view.div_(div_is_residual)
    return True


def _expert_views(module: ExpertWeights, param_name: str) -> list[tuple[torch.Tensor, bool]]:
    """``module.linear_views()`` of one parameter (``w1``, ``v1`` or ``w2``)."""
    per_expert = 3 if module.v1 is not None else 2
    index = {"w1": 0, "v1": 1, "w2": per_expert - 1}[param_name]
    return module.linear_views()[index::per_expert]


@torch.no_grad()
def generic_param_init_fn_(
    module: nn.Module,
    init_fn_: InitFn,
    n_layers: int,
    d_model: int | None = None,
    init_div_is_residual: bool | float | str = True,
    emb_init_std: float | None = None,
    emb_init_uniform_lim: Any = None,
    **kwargs: Any,
) -> None:
    """Initialize ``module``'s own parameters with the first module init function that takes it."""
    del kwargs
    arguments = {
        "init_fn_": init_fn_,
        "d_model": d_model,
        "init_div_is_residual": init_div_is_residual,
        "div_is_residual": residual_divisor(init_div_is_residual, n_layers),
        "emb_init_std": emb_init_std,
        "emb_init_uniform_lim": emb_init_uniform_lim,
    }
    for module_init in builtin_layers("module_init_fns").values():
        if module_init(module, **arguments):
            return
    if next(module.parameters(recurse=False), None) is None:
        return
    # A module of a plug-in layer: the module init functions plug-ins register.
    for module_init in external_layers("module_init_fns").values():
        if module_init(module, **arguments):
            return


def _kaiming(init: Callable[..., object]) -> Callable[..., None]:
    def param_init_fn(
        module: nn.Module,
        n_layers: int,
        init_gain: float = 0.0,
        fan_mode: str = "fan_in",
        init_nonlinearity: str = "leaky_relu",
        **init_config: Any,
    ) -> None:
        draw = partial(init, a=init_gain, mode=fan_mode, nonlinearity=init_nonlinearity)
        generic_param_init_fn_(module, draw, n_layers, **init_config)

    return param_init_fn


def _xavier(init: Callable[..., object]) -> Callable[..., None]:
    def param_init_fn(
        module: nn.Module, n_layers: int, init_gain: float = 0.0, **init_config: Any
    ) -> None:
        generic_param_init_fn_(module, partial(init, gain=init_gain), n_layers, **init_config)

    return param_init_fn


def baseline_param_init_fn_(
    module: nn.Module, n_layers: int, init_std: float | None = None, **init_config: Any
) -> None:
    """``N(0, init_std)`` weights."""
    if init_std is None:
        raise ValueError(
            "model.init_config.init_std must be set when init_config.name is baseline_"
        )
    draw = partial(nn.init.normal_, mean=0.0, std=float(init_std))
    generic_param_init_fn_(module, draw, n_layers, **init_config)


def small_param_init_fn_(
    module: nn.Module, n_layers: int, d_model: int, **init_config: Any
) -> None:
    """``N(0, sqrt(2 / (5 d_model)))`` weights (Nguyen & Salazar's small init)."""
    draw = partial(nn.init.normal_, mean=0.0, std=math.sqrt(2 / (5 * d_model)))
    generic_param_init_fn_(module, draw, n_layers, d_model, **init_config)


def neox_param_init_fn_(module: nn.Module, n_layers: int, d_model: int, **init_config: Any) -> None:
    """Small init, with residual projections divided by ``n_layers / sqrt(10)`` (GPT-NeoX)."""
    init_config["init_div_is_residual"] = n_layers / math.sqrt(10)
    small_param_init_fn_(module, n_layers, d_model, **init_config)


@torch.no_grad()
def torch_default_param_init_fn_(module: nn.Module, **kwargs: Any) -> None:
    """PyTorch's own init: the module's ``reset_parameters`` (unless loaded from a checkpoint)."""
    del kwargs
    reset: Any = getattr(module, "reset_parameters", None)
    own = list(module.parameters(recurse=False))
    if callable(reset) and not any(is_loaded(param) for param in own):
        reset()


for _name, _fn in {
    "default_": torch_default_param_init_fn_,
    "baseline_": baseline_param_init_fn_,
    "kaiming_uniform_": _kaiming(nn.init.kaiming_uniform_),
    "kaiming_normal_": _kaiming(nn.init.kaiming_normal_),
    "neox_init_": neox_param_init_fn_,
    "small_init_": small_param_init_fn_,
    "xavier_uniform_": _xavier(nn.init.xavier_uniform_),
    "xavier_normal_": _xavier(nn.init.xavier_normal_),
    "fc": fc_init,
    "embedding": embedding_init,
    "norm": norm_init,
    "multihead_attention": multihead_attention_init,
    "te_layernorm_mlp": te_layernorm_mlp_init,
    "moe": moe_init,
}.items():
    register_builtin("param_init_fns" if _name.endswith("_") else "module_init_fns", _name, _fn)


@torch.no_grad()
def init_mpt_module(module: nn.Module, config: MPTConfig) -> None:
    """Initialize the parameters owned directly by ``module`` (not its children).

    Runs the ``param_init_fns`` entry ``init_config.name`` names, as LLM Foundry calls it.
    Tensors that ``transformers`` marked as loaded from a checkpoint are left untouched.
    """
    param_init_fn = find_layer("init_config.name", config.init_config["name"])[1]
    param_init_fn(
        module=module, n_layers=config.n_layers, d_model=config.d_model, **config.init_config
    )
