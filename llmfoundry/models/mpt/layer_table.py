"""The layers an MPT config can name, and where a name that is not built in is found.

Each layer kind carries the name of one of LLM Foundry's layer registries (``norms``, ``fcs``,
``ffns``, ...). The built-in layers of these files are registered here by their modules as they
are imported, under the names MPT configs use (``low_precision_layernorm``, ``mptglu``...). A
name that is not built in is looked up, in this order:

1. in ``llmfoundry.layers_registry`` when the ``llmfoundry`` package is loaded in this process
   (it holds the layers registered in code and those of plug-in packages);
2. in the Python entry points of the group ``llmfoundry_<kind>`` of the installed packages,
   which is what a plug-in declares (``[project.entry-points.llmfoundry_norms]``).

So an exported model, whose folder carries these files, builds its built-in layers with nothing
but ``torch`` and ``transformers``, and finds a plug-in's layers when that plug-in is installed.

This file ships inside exported checkpoints: standard library only.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable
from typing import Any

# The built-in names of each layer kind. The objects behind them are registered by the sibling
# modules (norm.py, fc.py, ffn.py, attention.py, attention_impls.py, param_init.py). The
# ``ffns_with_megablocks`` entries run MegaBlocks when it is installed (with CUDA) and the
# built-in PyTorch MoE (moe.py) otherwise.
BUILTIN_NAMES: dict[str, tuple[str, ...]] = {
    "norms": (
        "layernorm",
        "low_precision_layernorm",
        "rmsnorm",
        "low_precision_rmsnorm",
        "triton_rmsnorm",
    ),
    "fcs": ("torch", "te"),
    "ffns": ("mptmlp", "mptglu", "torch_dmoe"),
    "ffns_with_norm": ("te_ln_mlp",),
    "ffns_with_megablocks": ("mb_moe", "mb_dmoe"),
    "attention_classes": ("multihead_attention", "multiquery_attention", "grouped_query_attention"),
    # "flash" runs flash-attn when installed and PyTorch's fused SDPA kernels otherwise; "sdpa"
    # asks for SDPA explicitly. "triton" (the name LLM Foundry's retired Triton kernel had) and
    # "flex" run PyTorch FlexAttention.
    "attention_implementations": ("torch", "flash", "sdpa", "triton", "flex"),
    "param_init_fns": (
        "default_",
        "baseline_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "neox_init_",
        "small_init_",
        "xavier_uniform_",
        "xavier_normal_",
    ),
    # Tried in this order on every module by the param init functions.
    "module_init_fns": (
        "fc",
        "embedding",
        "norm",
        "multihead_attention",
        "te_layernorm_mlp",
        "moe",
    ),
}
LAYER_KINDS = tuple(BUILTIN_NAMES)
# An FFN type is looked up in these kinds, first match wins (as LLM Foundry does).
FFN_KINDS = ("ffns_with_norm", "ffns_with_megablocks", "ffns")

_BUILTIN: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in LAYER_KINDS}


def register_builtin(kind: str, name: str, layer: Callable[..., Any]) -> None:
    """Record ``layer`` as the built-in ``name`` of ``kind`` (one of ``BUILTIN_NAMES[kind]``)."""
    if name not in BUILTIN_NAMES[kind]:
        raise KeyError(f"{name!r} is not a built-in name of {kind}")
    _BUILTIN[kind][name] = layer


def builtin_layers(kind: str) -> dict[str, Callable[..., Any]]:
    """The built-in layers of ``kind`` registered so far, by name."""
    return dict(_BUILTIN[kind])


def is_builtin(kind: str, name: str) -> bool:
    """Whether ``name`` is one of this folder's own layers of ``kind``."""
    return name in BUILTIN_NAMES[kind]


def _entry_points(kind: str) -> list[importlib.metadata.EntryPoint]:
    """The installed entry points of the group ``llmfoundry_<kind>`` (read afresh each call)."""
    return list(importlib.metadata.entry_points(group=f"llmfoundry_{kind}"))


def _loaded_registry_entries(kind: str) -> dict[str, Any]:
    """The entries of ``llmfoundry.layers_registry.<kind>``, if ``llmfoundry`` is loaded."""
    registries = sys.modules.get("llmfoundry.layers_registry")
    registry = getattr(registries, kind, None)
    if registry is None:
        return {}
    return dict(registry.get_all())


def external_layers(kind: str) -> dict[str, Callable[..., Any]]:
    """Every layer of ``kind`` that is not built in: registered in llmfoundry or by entry points."""
    found: dict[str, Callable[..., Any]] = {}
    for entry_point in _entry_points(kind):
        if not is_builtin(kind, entry_point.name):
            found[entry_point.name] = entry_point.load()
    for name, layer in _loaded_registry_entries(kind).items():
        if not is_builtin(kind, name):
            found[name] = layer
    return found


def lookup_layer(kind: str, name: str) -> Callable[..., Any] | None:
    """The layer named ``name`` of ``kind``: built in, registered in llmfoundry, or a plug-in's.

    Returns:
        The layer (a class or a builder function), or None when nothing provides the name.
    """
    if is_builtin(kind, name):
        return _BUILTIN[kind].get(name)
    registered = _loaded_registry_entries(kind).get(name)
    if registered is not None:
        return registered
    for entry_point in _entry_points(kind):
        if entry_point.name == name:
            return entry_point.load()
    return None


def layer_source(kind: str, name: str, layer: Any) -> dict[str, str | None]:
    """Where an outside layer comes from: its ``module`` and the ``distribution`` installing it.

    An entry point names its distribution; a layer registered in code is traced through the
    installed distributions that provide its top-level package (None when none does, e.g. a
    script run from a source tree).
    """
    for entry_point in _entry_points(kind):
        if entry_point.name == name:
            dist = entry_point.dist.name if entry_point.dist is not None else None
            return {"module": entry_point.module, "distribution": dist}
    module = getattr(layer, "__module__", None) or type(layer).__module__
    providers = importlib.metadata.packages_distributions().get(module.split(".")[0], [])
    return {"module": module, "distribution": providers[0] if providers else None}
