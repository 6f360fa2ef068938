"""MPT's norm layers, low-precision variants included."""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from llmfoundry.models.mpt.norm import LPLayerNorm, LPRMSNorm, RMSNorm, build_norm
from tests.fixtures import tiny_config, tiny_model
from tests.models.mpt_helpers import random_ids

NormT = TypeVar("NormT", bound=nn.Module)


def _randomized(norm: NormT, seed: int = 0) -> NormT:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in norm.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    return norm


def _inputs() -> torch.Tensor:
    return torch.randn(4, 7, 64, generator=torch.Generator().manual_seed(1)) * 3 + 1


def test_low_precision_layernorm_equals_layernorm_without_autocast() -> None:
    lp = _randomized(LPLayerNorm(64))
    reference = nn.LayerNorm(64)
    reference.load_state_dict(lp.state_dict())
    x = _inputs()
    assert torch.equal(lp(x), reference(x))


def test_low_precision_layernorm_computes_in_the_autocast_dtype() -> None:
    """Under bf16 autocast it returns bf16, computed in bf16 (plain LayerNorm upcasts to fp32)."""
    lp = _randomized(LPLayerNorm(64))
    x = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lp(x)
        upcast = nn.LayerNorm(64)(x)
    expected = F.layer_norm(x.bfloat16(), (64,), lp.weight.bfloat16(), lp.bias.bfloat16(), lp.eps)
    assert out.dtype == torch.bfloat16 and upcast.dtype == torch.float32
    assert torch.equal(out, expected)
    # bf16 keeps ~3 significant digits of the fp32 result.
    torch.testing.assert_close(out.float(), lp(x), atol=0.1, rtol=0.02)


def test_low_precision_layernorm_backward_under_autocast() -> None:
    lp = _randomized(LPLayerNorm(64))
    x = _inputs().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp(x).float().square().sum().backward()
    assert x.grad is not None and lp.weight.grad is not None and lp.bias.grad is not None
    assert lp.weight.grad.dtype == torch.float32 and torch.isfinite(lp.weight.grad).all()


def test_rmsnorm_formula_and_dtype() -> None:
    norm = _randomized(RMSNorm(64, eps=1e-6))
    x = _inputs()
    assert norm.weight is not None
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    # A bf16 input is normalized in fp32 and returned in bf16.
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def test_low_precision_rmsnorm() -> None:
    lp = _randomized(LPRMSNorm(64))
    reference = RMSNorm(64)
    reference.load_state_dict(lp.state_dict())
    x = _inputs()
    assert torch.equal(lp(x), reference(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lp(x)
    assert lp.weight is not None
    xb, wb = x.bfloat16(), lp.weight.bfloat16()
    expected = xb * torch.rsqrt(xb.pow(2).mean(-1, keepdim=True) + lp.eps) * wb
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected)


def test_build_norm_honours_bias_flag() -> None:
    assert build_norm("layernorm", 8, 1e-5, bias=False, device=None).bias is None
    assert build_norm("low_precision_layernorm", 8, 1e-5, bias=True, device=None).bias is not None
    assert isinstance(build_norm("rmsnorm", 8, 1e-5, bias=True, device=None), RMSNorm)
    assert isinstance(build_norm("low_precision_rmsnorm", 8, 1e-5, True, None), LPRMSNorm)


def test_model_runs_under_bf16_autocast() -> None:
    """The default MPT (low-precision layernorm) under bf16 autocast stays close to fp32."""
    model = tiny_model(tiny_config(), seed=0)
    ids = random_ids(2, 16)
    with torch.no_grad():
        reference = model(ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(ids).logits
    assert low.dtype == torch.bfloat16
    error = (low.float() - reference).norm() / reference.norm()
    assert error < 0.05
