"""Normalization layers of MPT: LayerNorm and RMSNorm, each in a low-precision variant.

The low-precision variants run the normalization in the autocast dtype (e.g. bf16) instead of
upcasting to fp32, which is what LLM Foundry's ``low_precision_layernorm`` does for speed.
``triton_rmsnorm`` is RMSNorm through flash-attn's fused Triton kernel on CUDA when flash-attn
is installed, and the same math in PyTorch otherwise.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any, overload

import torch
import torch.nn.functional as F
from torch import nn

from .layer_table import is_builtin, lookup_layer, register_builtin


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast casts matmuls to on ``device_type`` right now (None when off)."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


@overload
def _maybe_cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor: ...
@overload
def _maybe_cast(tensor: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None: ...
def _maybe_cast(tensor: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    """``tensor`` in ``dtype`` (None, and any tensor when ``dtype`` is None, as they are)."""
    if tensor is None or dtype is None:
        return tensor
    return tensor.to(dtype)


class LPLayerNorm(nn.LayerNorm):
    """LayerNorm that, under autocast, computes in the autocast dtype rather than fp32."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # nn.LayerNorm.forward's name
        """Layer-normalize ``input``, in the autocast dtype under autocast."""
        dtype = autocast_dtype(input.device.type)
        if dtype is None:
            return super().forward(input)
        with torch.autocast(device_type=input.device.type, enabled=False):
            return F.layer_norm(
                _maybe_cast(input, dtype),
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
        dtype = autocast_dtype(x.device.type)
        if dtype is None:
            return super().forward(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._normalize(x.to(dtype), _maybe_cast(self.weight, dtype))


@functools.cache
def _triton_rms_norm() -> Callable[..., torch.Tensor] | None:
    """flash-attn's fused Triton RMSNorm, or None where flash-attn is not installed.

    Imported by name so that ``transformers``' check of remote code does not demand flash-attn.
    """
    if importlib.util.find_spec("flash_attn") is None:
        return None
    try:
        return importlib.import_module("flash_attn.ops.triton.layer_norm").rms_norm_fn
    except (ImportError, AttributeError):
        return None


class TritonRMSNorm(RMSNorm):
    """LLM Foundry's ``triton_rmsnorm``: RMSNorm, fused by flash-attn's Triton kernel on CUDA.

    Without CUDA or flash-attn it computes :class:`RMSNorm`'s math in PyTorch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = _triton_rms_norm() if x.is_cuda else None
        if kernel is None or self.weight is None:
            return super().forward(x)
        return kernel(
            x,
            self.weight,
            None,
            residual=None,
            eps=self.eps,
            dropout_p=0.0,
            prenorm=False,
            residual_in_fp32=False,
        )


for _name, _norm in {
    "layernorm": nn.LayerNorm,
    "low_precision_layernorm": LPLayerNorm,
    "rmsnorm": RMSNorm,
    "low_precision_rmsnorm": LPRMSNorm,
    "triton_rmsnorm": TritonRMSNorm,
}.items():
    register_builtin("norms", _name, _norm)


def _drop_bias(module: nn.Module) -> nn.Module:
    """``module`` without its own ``bias`` parameter (LLM Foundry's ``no_bias`` for plug-in norms)."""
    if isinstance(getattr(module, "bias", None), nn.Parameter):
        module.register_parameter("bias", None)
    return module


def build_norm(
    norm_type: str, d_model: int, eps: float, bias: bool, device: str | None
) -> nn.Module:
    """Create the norm layer named by ``norm_type``: a built-in one or a plug-in's.

    A plug-in's norm is called as LLM Foundry calls its registered norms,
    ``(normalized_shape=..., eps=..., device=...)``; without ``bias`` its bias is removed.

    Raises:
        ValueError: if no norm has that name.
    """
    norm: Any = lookup_layer("norms", norm_type)
    if norm is None:
        raise ValueError(f"unknown norm_type {norm_type!r}")
    if is_builtin("norms", norm_type):
        return norm(d_model, eps=eps, bias=bias, device=device)
    module = norm(normalized_shape=d_model, eps=eps, device=device)
    return module if bias else _drop_bias(module)
