"""Parameter initialization of MPT (``init_config``), checked by the statistics of fresh weights."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from llmfoundry.models.mpt import MPTForCausalLM
from tests.fixtures import tiny_config

D_MODEL, N_LAYERS, HIDDEN = 256, 4, 1024
KAIMING_STD = math.sqrt(2 / D_MODEL)  # kaiming_normal_, fan_in, relu gain
RESIDUAL_DIV = math.sqrt(2 * N_LAYERS)


def _fresh(init_config: dict[str, Any] | None = None, **overrides: Any) -> MPTForCausalLM:
    """A wide (d_model 256, 4 layers) model straight from init, so statistics are tight."""
    torch.manual_seed(0)
    config = tiny_config(
        d_model=D_MODEL,
        n_layers=N_LAYERS,
        expansion_ratio=4,
        vocab_size=512,
        init_config=init_config or {},
        **overrides,
    )
    return MPTForCausalLM(config)


def _pooled(model: MPTForCausalLM, suffix: str) -> torch.Tensor:
    """Every block's ``suffix`` weight, flattened together."""
    return torch.cat(
        [p.detach().flatten() for n, p in model.named_parameters() if n.endswith(suffix)]
    )


def _query_weights(model: MPTForCausalLM) -> torch.Tensor:
    """The query slice of every fused ``Wqkv`` (a non-residual d_model x d_model matrix)."""
    return torch.cat([w[:D_MODEL].flatten() for w in _wqkv_weights(model)])


def _wqkv_weights(model: MPTForCausalLM) -> list[torch.Tensor]:
    return [
        model.get_parameter(f"transformer.blocks.{i}.attn.Wqkv.weight").detach()
        for i in range(N_LAYERS)
    ]


def test_residual_projections_are_divided_by_sqrt_2_n_layers() -> None:
    """``out_proj`` and ``down_proj`` get kaiming std / sqrt(2 * n_layers); other linears don't."""
    model = _fresh()
    query, up = _query_weights(model), _pooled(model, "ffn.up_proj.weight")
    out_proj, down = _pooled(model, "attn.out_proj.weight"), _pooled(model, "ffn.down_proj.weight")
    assert query.std().item() == pytest.approx(KAIMING_STD, rel=0.03)
    assert up.std().item() == pytest.approx(KAIMING_STD, rel=0.03)
    # out_proj has the query's fan-in, so the ratio isolates the residual divisor.
    assert (out_proj.std() / query.std()).item() == pytest.approx(1 / RESIDUAL_DIV, rel=0.03)
    assert down.std().item() == pytest.approx(math.sqrt(2 / HIDDEN) / RESIDUAL_DIV, rel=0.03)
    assert abs(out_proj.mean().item()) < 0.02 * out_proj.std().item()


@pytest.mark.parametrize(("div", "expected"), [(False, 1.0), (3.0, 1 / 3)])
def test_init_div_is_residual_off_or_a_number(div: bool | float, expected: float) -> None:
    """``init_div_is_residual: false`` leaves residual projections alone; a number divides by it."""
    model = _fresh({"init_div_is_residual": div})
    ratio = _pooled(model, "attn.out_proj.weight").std() / _query_weights(model).std()
    assert ratio.item() == pytest.approx(expected, rel=0.03)


def test_emb_init_std_sets_the_embedding_std() -> None:
    model = _fresh({"emb_init_std": 0.02})
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert model.transformer.wpe.weight.std().item() == pytest.approx(0.02, rel=0.05)
    # Not the kaiming default, and linears are unaffected.
    assert _query_weights(model).std().item() == pytest.approx(KAIMING_STD, rel=0.03)


@pytest.mark.parametrize(("lim", "low", "high"), [(0.1, -0.1, 0.1), ([-0.05, 0.2], -0.05, 0.2)])
def test_emb_init_uniform_lim_bounds_the_embedding(lim: Any, low: float, high: float) -> None:
    weight = _fresh({"emb_init_uniform_lim": lim}).transformer.wte.weight
    assert weight.min().item() >= low and weight.max().item() <= high
    assert weight.min().item() < low + 0.01 and weight.max().item() > high - 0.01


def test_norms_start_at_one_and_biases_at_zero() -> None:
    model = _fresh(attn_config={"qk_ln": True}, tie_word_embeddings=False)
    norms = [n for n, _ in model.named_parameters() if "norm" in n or "_ln." in n]
    assert len(norms) == N_LAYERS * 8 + 2  # norm_1, norm_2, q_ln, k_ln, norm_f: weight + bias
    for name, param in model.named_parameters():
        if name.endswith(".bias"):
            assert torch.all(param == 0), name
        elif "norm" in name or "_ln." in name:
            assert torch.all(param == 1), name
    lm_head = model.lm_head
    assert lm_head is not None
    assert lm_head.weight.std().item() == pytest.approx(KAIMING_STD, rel=0.03)


def test_fused_qkv_is_initialized_per_slice() -> None:
    """xavier on a fused ``Wqkv`` uses each of q, k, v's own fans, not the fused matrix's."""
    model = _fresh({"name": "xavier_uniform_", "init_gain": 1.0})
    per_slice_bound = math.sqrt(6 / (D_MODEL + D_MODEL))  # fused would be sqrt(6 / (256 + 768))
    for weight in _wqkv_weights(model):
        assert weight.abs().max().item() <= per_slice_bound
        assert weight.abs().max().item() > 0.98 * per_slice_bound
        assert weight.std().item() == pytest.approx(per_slice_bound / math.sqrt(3), rel=0.03)


SCHEMES: dict[str, tuple[dict[str, Any], float, float]] = {
    # name: (init_config, std of a non-residual linear, divisor of residual projections)
    "small_init_": ({"name": "small_init_"}, math.sqrt(2 / (5 * D_MODEL)), RESIDUAL_DIV),
    "neox_init_": ({"name": "neox_init_"}, math.sqrt(2 / (5 * D_MODEL)), N_LAYERS / math.sqrt(10)),
    "baseline_": ({"name": "baseline_", "init_std": 0.01}, 0.01, RESIDUAL_DIV),
    "kaiming_uniform_": ({"name": "kaiming_uniform_"}, KAIMING_STD, RESIDUAL_DIV),
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_init_schemes(scheme: str) -> None:
    init_config, std, divisor = SCHEMES[scheme]
    model = _fresh(init_config)
    assert _query_weights(model).std().item() == pytest.approx(std, rel=0.03)
    out_proj = _pooled(model, "attn.out_proj.weight")
    assert out_proj.std().item() == pytest.approx(std / divisor, rel=0.03)


def test_init_is_reproducible_under_a_seed() -> None:
    first, second = _fresh().state_dict(), _fresh().state_dict()
    for name, tensor in first.items():
        assert torch.equal(second[name], tensor), name
