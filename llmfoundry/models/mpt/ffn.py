"""MPT feed-forward blocks: ``mptmlp`` (up, activation, down) and ``mptglu`` (gated)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .configuration_mpt import MPTConfig
from .fc import build_linear, build_te_ln_mlp

_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}
_DEFAULT_ACT: dict[str, Any] = {"name": "gelu", "approximate": "none"}


def build_activation(spec: str | dict[str, Any] | None) -> nn.Module:
    """Build the FFN activation from ``ffn_config.ffn_act_fn`` (``{name: gelu, approximate: tanh}``)."""
    if spec is None:
        spec = _DEFAULT_ACT
    if isinstance(spec, str):
        spec = {"name": spec}
    kwargs = dict(spec)
    name = kwargs.pop("name")
    return _ACTIVATIONS[name](**kwargs)


class MPTMLP(nn.Module):
    """``down_proj(act(up_proj(x)))``.

    Args:
        config: the model config (``ffn_config``, ``no_bias``, widths).
        device: where to create the weights.
    """

    def __init__(self, config: MPTConfig, device: str | None = None) -> None:
        super().__init__()
        hidden, bias = config.ffn_hidden_size, not config.no_bias
        self.up_proj = build_linear(config, config.d_model, hidden, bias, device)
        self.act = build_activation(config.ffn_config.get("ffn_act_fn"))
        self.down_proj = build_linear(config, hidden, config.d_model, bias, device)
        self.down_proj._is_residual = True  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


class MPTGLU(MPTMLP):
    """``down_proj(act(gate_proj(x)) * up_proj(x))``, as in LLaMA-style FFNs."""

    def __init__(self, config: MPTConfig, device: str | None = None) -> None:
        super().__init__(config, device)
        self.gate_proj = build_linear(
            config, config.d_model, config.ffn_hidden_size, not config.no_bias, device
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def build_ffn(config: MPTConfig, device: str | None = None) -> nn.Module:
    """Create the FFN named by ``config.ffn_config['ffn_type']``."""
    if config.ffn_config["ffn_type"] == "te_ln_mlp":
        return build_te_ln_mlp(config, device)
    if config.ffn_config["ffn_type"] == "mptglu":
        return MPTGLU(config, device)
    return MPTMLP(config, device)
