"""MPT feed-forward blocks: ``mptmlp`` (up, activation, down), ``mptglu`` (gated), TE's
``te_ln_mlp``, the mixtures of experts ``torch_dmoe``, ``mb_moe`` and ``mb_dmoe`` (``moe.py``,
``moe_megablocks.py``), or a plug-in's.

Every FFN is built as LLM Foundry builds the entries of its ``ffns`` registries:
``(d_model=, expansion_ratio=, device=, bias=, fc_type=, **ffn_config options)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .activations import DEFAULT_ACT, build_activation
from .config_layers import find_layer
from .configuration_mpt import MPTConfig
from .fc import build_linear, mark_residual, transformer_engine
from .layer_table import register_builtin
from .moe import MoEFFN
from .moe_megablocks import announce_fallback, build_megablocks_moe, megablocks_usable
from .moe_options import moe_options

# MegaBlocks' default expert activation (mb_moe / mb_dmoe without ffn_act_fn).
_MOE_DEFAULT_ACT: dict[str, Any] = {"name": "gelu", "approximate": "tanh"}


def _hidden_size(d_model: int, expansion_ratio: float, ffn_hidden_size: int | None) -> int:
    """``ffn_hidden_size`` when given, else ``d_model * expansion_ratio``."""
    return int(ffn_hidden_size) if ffn_hidden_size is not None else int(d_model * expansion_ratio)


class MPTMLP(nn.Module):
    """``down_proj(act(up_proj(x)))`` (and the gated variant's ``gate_proj``, see ``MPTGLU``).

    Args:
        d_model: input and output width.
        expansion_ratio: hidden width as a multiple of ``d_model`` (unless ``ffn_hidden_size``).
        fc_type: the linear layers' kind (``torch``, ``{name: torch}``...).
        ffn_hidden_size: the hidden width, overriding ``expansion_ratio``.
        ffn_act_fn: the activation (``ffn_config.ffn_act_fn``; exact GELU by default).
        device: where to create the weights.
        bias: give the linear layers biases.
    """

    # MPTGLU's: also build ``gate_proj`` (last, so that the parameter order stays LLM Foundry's).
    _gated = False

    def __init__(
        self,
        d_model: int,
        expansion_ratio: float,
        fc_type: str | dict[str, Any] | None = None,
        ffn_hidden_size: int | None = None,
        ffn_act_fn: str | dict[str, Any] | None = None,
        device: str | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden = _hidden_size(d_model, expansion_ratio, ffn_hidden_size)
        self.up_proj = build_linear(fc_type, d_model, hidden, bias, device)
        self.act = build_activation(ffn_act_fn)
        self.down_proj = build_linear(fc_type, hidden, d_model, bias, device)
        mark_residual(self.down_proj)
        if self._gated:
            self.gate_proj = build_linear(fc_type, d_model, hidden, bias, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


class MPTGLU(MPTMLP):
    """``down_proj(act(gate_proj(x)) * up_proj(x))``, as in LLaMA-style FFNs (``MPTMLP``'s
    arguments)."""

    _gated = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def build_te_ln_mlp(
    d_model: int,
    expansion_ratio: float,
    fc_type: str | dict[str, Any] | None = None,
    ffn_hidden_size: int | None = None,
    ffn_act_fn: str | dict[str, Any] | None = None,
    device: str | None = None,
    bias: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """TransformerEngine's fused LayerNorm + MLP (``ffn_type: te_ln_mlp``).

    It normalizes its own input, so the block that holds it has no ``norm_2``. ``kwargs`` go
    to ``te.LayerNormMLP`` (``eps``, ``normalization``...).
    """
    del fc_type  # TE's fused MLP has its own linear layers
    act: Any = ffn_act_fn or "gelu"
    if isinstance(act, dict):
        act = act["name"]
    return transformer_engine().LayerNormMLP(
        hidden_size=d_model,
        ffn_hidden_size=_hidden_size(d_model, expansion_ratio, ffn_hidden_size),
        bias=bias,
        activation=act,
        device=device or "cuda",
        **kwargs,
    )


def _moe_builder(ffn_type: str) -> Callable[..., nn.Module]:
    """The builder of ``ffn_type`` ``torch_dmoe``, ``mb_moe`` or ``mb_dmoe``.

    ``moe_keys`` are the ``ffn_config`` MoE keys (``moe_options``). Every expert is built
    whatever ``moe_world_size`` says: the training command splits them over the ranks
    afterwards (``llmfoundry.models.moe_parallel``).
    """
    megablocks = ffn_type != "torch_dmoe"
    default_act = _MOE_DEFAULT_ACT if megablocks else DEFAULT_ACT

    def build(
        d_model: int,
        expansion_ratio: float,
        fc_type: str | dict[str, Any] | None = None,
        ffn_hidden_size: int | None = None,
        ffn_act_fn: str | dict[str, Any] | None = None,
        device: str | None = None,
        bias: bool = True,
        **moe_keys: Any,
    ) -> nn.Module:
        del fc_type  # the experts hold their own stacked weights
        options = moe_options(
            {"ffn_type": ffn_type, "ffn_hidden_size": ffn_hidden_size, **moe_keys},
            d_model,
            expansion_ratio,
        )
        act = build_activation(ffn_act_fn if ffn_act_fn is not None else default_act)
        if not megablocks:
            return MoEFFN(d_model, options, act, bias=False, device=device)
        if megablocks_usable():
            return build_megablocks_moe(ffn_type, d_model, options, moe_keys, act, bias, device)
        announce_fallback(ffn_type)
        return MoEFFN(d_model, options, act, bias=bias, device=device)

    build.__name__ = build.__qualname__ = f"build_{ffn_type}"
    build.__doc__ = (
        "``ffn_type: torch_dmoe``: dropless top-k experts (``moe.py``). As LLM Foundry's, the "
        "experts' activation is exact GELU unless ``ffn_act_fn`` says otherwise, and the "
        "experts have no bias."
        if not megablocks
        else f"``ffn_type: {ffn_type}``: MegaBlocks' "
        f"{'dMoE' if ffn_type == 'mb_dmoe' else 'MoE'} where MegaBlocks and CUDA are there, "
        "the built-in ``MoEFFN`` (same parameter names and layout, an expert bias when the "
        "model has biases) elsewhere. The experts' activation is MegaBlocks' default, "
        "tanh-approximated GELU, unless ``ffn_act_fn`` says otherwise."
    )
    return build


build_torch_dmoe = _moe_builder("torch_dmoe")


register_builtin("ffns", "mptmlp", MPTMLP)
register_builtin("ffns", "mptglu", MPTGLU)
register_builtin("ffns", "torch_dmoe", build_torch_dmoe)
register_builtin("ffns_with_norm", "te_ln_mlp", build_te_ln_mlp)
for _name in ("mb_moe", "mb_dmoe"):
    register_builtin("ffns_with_megablocks", _name, _moe_builder(_name))


def build_ffn(config: MPTConfig, device: str | None = None) -> nn.Module:
    """Create the FFN named by ``config.ffn_config['ffn_type']`` (built in or a plug-in's).

    The FFN gets ``_has_norm = True`` when it normalizes its own input (an entry of
    ``ffns_with_norm``), and ``_uses_megablocks = True`` for an ``ffns_with_megablocks`` entry.
    """
    name = config.ffn_config["ffn_type"]
    kind, ffn = find_layer("ffn_config.ffn_type", name)
    options = {
        key: value
        for key, value in config.ffn_config.items()
        if key not in ("ffn_type", "expansion_ratio") and value is not None
    }
    # MegaBlocks' ``bias`` key (in an MoE ffn_config) is inert: as in LLM Foundry, the model's
    # ``no_bias`` decides.
    options.pop("bias", None)
    if name == "te_ln_mlp":
        options["eps"] = config.norm_eps
        options["normalization"] = "RMSNorm" if "rmsnorm" in config.norm_type else "LayerNorm"
    module = ffn(
        d_model=config.d_model,
        expansion_ratio=config.ffn_expansion_ratio,
        device=device,
        bias=not config.no_bias,
        fc_type={"name": config.fc_type},
        **options,
    )
    if kind == "ffns_with_norm":
        module._has_norm = True
    elif kind == "ffns_with_megablocks":
        module._uses_megablocks = True
    return module
