"""The registries of MPT's layers: what an MPT config's layer names (``norm_type``, ``ffn_type``, ...) can be.

Built-in layers live in the standalone ``llmfoundry.models.mpt`` sources (which an exported
model carries with it, with their own table of them: ``models/mpt/layer_table.py``) and are
registered here under LLM Foundry's names when ``llmfoundry.models.mpt`` is imported. A layer
registered here in code, or by a plug-in package through the entry-point group
``llmfoundry_<registry>`` (for example ``llmfoundry_norms``), is found by an MPT built
afterwards from a config naming it; the config then records in ``layer_sources`` which module
and distribution provided it, and an export of the model says so in its config.json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmfoundry.registry import Registry

if TYPE_CHECKING:  # torch only for the entries' types: importing the registries stays light
    import torch
    from torch import nn

# What each kind of entry builds or returns (the arguments are the registry's documented ones).
LayerBuilder = Callable[..., "nn.Module"]
AttentionKernel = Callable[..., "tuple[torch.Tensor, torch.Tensor | None, Any]"]

norms: Registry[LayerBuilder] = Registry(
    "norms",
    "Normalization layers: (normalized_shape: int, eps: float, device: str | None) -> nn.Module, "
    "as LLM Foundry calls them (without bias, a bias parameter is removed after); named by "
    "MPT's norm_type.",
    builtins=("llmfoundry.models.mpt",),
)
fcs: Registry[LayerBuilder] = Registry(
    "fcs",
    "Linear layers: (in_features: int, out_features: int, bias: bool, device: str | None) "
    "-> nn.Module; named by fc_type.",
    builtins=("llmfoundry.models.mpt",),
)
ffns: Registry[LayerBuilder] = Registry(
    "ffns",
    "Feed-forward blocks: (d_model: int, expansion_ratio: float, device: str | None, bias: bool, "
    "fc_type: dict, **ffn_config options) -> nn.Module (forward: x -> x); named by "
    "ffn_config.ffn_type.",
    builtins=("llmfoundry.models.mpt",),
)
ffns_with_norm: Registry[LayerBuilder] = Registry(
    "ffns_with_norm",
    "Feed-forward blocks that normalize their own input (the block then has no norm_2); "
    "same signature as ffns.",
    builtins=("llmfoundry.models.mpt",),
)
ffns_with_megablocks: Registry[LayerBuilder] = Registry(
    "ffns_with_megablocks",
    "Mixture-of-experts feed-forward blocks; same signature as ffns.",
    builtins=("llmfoundry.models.mpt",),
)
attention_classes: Registry[LayerBuilder] = Registry(
    "attention_classes",
    "Attention modules: (config: MPTConfig, device: str | None, attn_config: dict) -> nn.Module, "
    "attn_config being the layer's own (block_overrides applied); forward(x, inputs, "
    "past_key_values, layer_idx, rotary, kv_x) -> Tensor as MPT's GroupedQueryAttention; named "
    "by attn_config.attn_type.",
    builtins=("llmfoundry.models.mpt",),
)
attention_implementations: Registry[AttentionKernel] = Registry(
    "attention_implementations",
    "Attention kernels, called as LLM Foundry calls them: (query (b, s, h*d), key, value "
    "(b, s_k, kv*d), n_heads, kv_n_heads, past_key_value, softmax_scale, attn_bias, "
    "key_padding_mask, is_causal, dropout_p, training, needs_weights, attn_logit_softcapping, "
    "sliding_window_size) -> (output (b, s, h*d), weights, past_key_value); named by "
    "attn_config.attn_impl.",
    builtins=("llmfoundry.models.mpt",),
)
param_init_fns: Registry[Callable[..., None]] = Registry(
    "param_init_fns",
    "Weight initializers: (module: nn.Module, n_layers: int, d_model: int, **init_config) -> "
    "None, called on one module at a time; named by init_config.name.",
    builtins=("llmfoundry.models.mpt",),
)
module_init_fns: Registry[Callable[..., bool]] = Registry(
    "module_init_fns",
    "Per-module initializers tried in turn by the param init functions: (module: nn.Module, "
    "init_fn_, d_model, init_div_is_residual, div_is_residual, emb_init_std, "
    "emb_init_uniform_lim) -> bool (True when the module was handled).",
    builtins=("llmfoundry.models.mpt",),
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
