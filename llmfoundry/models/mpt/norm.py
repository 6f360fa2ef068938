"""Normalization layers of MPT: LayerNorm and RMSNorm, each in a low-precision variant.

The low-precision variants run the normalization in the autocast dtype (e.g. bf16) instead of
upcasting to fp32, which is what LLM Foundry's ``low_precision_layernorm`` does for speed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _autocast_dtype(tensor: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would use for ``tensor``'s device, or None outside autocast."""
    device_type = tensor.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _maybe_cast(tensor: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    if tensor is None or dtype is None:
        return tensor
    return tensor.to(dtype)


class LPLayerNorm(nn.LayerNorm):
    """LayerNorm that, under autocast, computes in the autocast dtype rather than fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _autocast_dtype(x)
        if dtype is None:
            return super().forward(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.layer_norm(
                _maybe_cast(x, dtype),  # type: ignore[arg-type]
                self.normalized_shape,
                _maybe_cast(self.weight, dtype),
                _maybe_cast(self.bias, dtype),
                self.eps,
            )


class RMSNorm(nn.Module):
    """Root-mean-square normalization with an optional learned scale.

    Args:
        normalized_shape: size of the last dimension.
        eps: added to the mean square before the square root.
        weight: learn a per-feature scale.
        bias: accepted for signature parity with LayerNorm; RMSNorm has no bias.
        device: where to create the weight.
    """

    def __init__(
        self,
        normalized_shape: int,
        eps: float = 1e-5,
        weight: bool = True,
        bias: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        del bias  # RMSNorm never has one
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(normalized_shape, device=device)) if weight else None

    def _normalize(self, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return out * weight if weight is not None else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._normalize(x.float(), self.weight).to(x.dtype)


class LPRMSNorm(RMSNorm):
    """RMSNorm that, under autocast, computes in the autocast dtype rather than fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _autocast_dtype(x)
        if dtype is None:
            return super().forward(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._normalize(x.to(dtype), _maybe_cast(self.weight, dtype))


def build_norm(
    norm_type: str, d_model: int, eps: float, bias: bool, device: str | None
) -> nn.Module:
    """Create the norm layer named by ``norm_type`` (one of MPTConfig's ``norm_type`` values)."""
    if norm_type == "layernorm":
        return nn.LayerNorm(d_model, eps=eps, bias=bias, device=device)
    if norm_type == "low_precision_layernorm":
        return LPLayerNorm(d_model, eps=eps, bias=bias, device=device)
    if norm_type == "rmsnorm":
        return RMSNorm(d_model, eps=eps, device=device)
    if norm_type == "low_precision_rmsnorm":
        return LPRMSNorm(d_model, eps=eps, device=device)
    raise ValueError(f"unknown norm_type {norm_type!r}")
