"""The registries of MPT's layers: what an MPT config's layer names (``norm_type``, ``ffn_type``, ...) can be.

Built-in layers live in the standalone ``llmfoundry.models.mpt`` sources (which an exported
model carries with it) and are registered here under the names MPT configs use. A plug-in
package adds a layer through the entry-point group ``llmfoundry_<registry>`` (for example
``llmfoundry_norms``); an MPT built afterwards from a config naming it contains that layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmfoundry.registry import Registry

norms: Registry[Callable[..., Any]] = Registry(
    "norms",
    "Normalization layers: (normalized_shape: int, eps: float, device: str | None, bias: bool) "
    "-> nn.Module; named by MPT's norm_type.",
)
fcs: Registry[Callable[..., Any]] = Registry(
    "fcs",
    "Linear layers: (in_features: int, out_features: int, bias: bool, device: str | None) "
    "-> nn.Module; named by fc_type.",
)
ffns: Registry[Callable[..., Any]] = Registry(
    "ffns",
    "Feed-forward blocks: (d_model: int, expansion_ratio: float, device: str | None, bias: bool, "
    "**ffn_config) -> nn.Module; named by ffn_config.ffn_type.",
)
ffns_with_norm: Registry[Callable[..., Any]] = Registry(
    "ffns_with_norm",
    "Feed-forward blocks that normalize their own input (the block then has no norm_2); "
    "same signature as ffns.",
)
ffns_with_megablocks: Registry[Callable[..., Any]] = Registry(
    "ffns_with_megablocks",
    "Mixture-of-experts feed-forward blocks; same signature as ffns.",
)
attention_classes: Registry[Callable[..., Any]] = Registry(
    "attention_classes",
    "Attention modules: (config: MPTConfig, device: str | None, **kwargs) -> nn.Module; "
    "named by attn_config.attn_type.",
)
attention_implementations: Registry[Callable[..., Any]] = Registry(
    "attention_implementations",
    "Attention kernels: (query, key, value, **kwargs) -> (output, weights, past_key_value); "
    "named by attn_config.attn_impl.",
)
param_init_fns: Registry[Callable[..., Any]] = Registry(
    "param_init_fns",
    "Whole-model weight initializers: (module: nn.Module, **init_config) -> None; "
    "named by init_config.name.",
)
module_init_fns: Registry[Callable[..., Any]] = Registry(
    "module_init_fns",
    "Per-module initializers tried in turn by the param init functions: "
    "(module: nn.Module, init_fn, **kwargs) -> bool (True when the module was handled).",
)

LAYER_REGISTRIES: tuple[Registry[Any], ...] = (
    norms,
    fcs,
    ffns,
    ffns_with_norm,
    ffns_with_megablocks,
    attention_classes,
    attention_implementations,
    param_init_fns,
    module_init_fns,
)
