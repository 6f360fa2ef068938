"""RoPE and sliding-window attention: the math, both attention paths, the cache and padding."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from llmfoundry.models.mpt import MPTConfig
from llmfoundry.models.mpt.rotary import apply_rotary, rotary_cos_sin
from tests.fixtures import clone_with, tiny_config, tiny_model

from .mpt_helpers import assert_close, full_and_cached_logits, generate, left_pad, random_ids

ROPE = {"rope": True, "rope_theta": 10000}
POSITION_SCHEMES: dict[str, dict[str, Any]] = {
    "rope_dail": ROPE,
    "rope_hf_linear": {
        **ROPE,
        "rope_impl": "hf",
        "rope_hf_config": {"type": "linear", "factor": 2.0},
    },
    "window_3": {"sliding_window_size": 3},
    "rope_window_gqa": {
        **ROPE,
        "sliding_window_size": 4,
        "attn_type": "grouped_query_attention",
        "kv_n_heads": 2,
    },
}


def _config(attn: dict[str, Any], impl: str = "torch", **overrides: Any) -> MPTConfig:
    return tiny_config({**attn, "attn_impl": impl}, learned_pos_emb=False, **overrides)


def test_rotary_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(q_pos: int, k_pos: int) -> torch.Tensor:
        cos_q, sin_q = rotary_cos_sin(torch.tensor([[q_pos]]), 8, 10000.0)
        cos_k, sin_k = rotary_cos_sin(torch.tensor([[k_pos]]), 8, 10000.0)
        return (apply_rotary(q, cos_q, sin_q) * apply_rotary(k, cos_k, sin_k)).sum()

    torch.testing.assert_close(score(7, 3), score(107, 103))
    assert not torch.allclose(score(7, 3), score(7, 5))
    # a rotation keeps the vector's length
    cos, sin = rotary_cos_sin(torch.tensor([[41]]), 8, 10000.0)
    torch.testing.assert_close(apply_rotary(q, cos, sin).norm(), q.norm())


def test_rotary_angles_follow_the_published_frequencies() -> None:
    cos, sin = rotary_cos_sin(torch.tensor([[3]]), 4, 100.0)
    angles = torch.tensor([3 * 1.0, 3 * 100.0 ** (-0.5)] * 2)
    torch.testing.assert_close(cos.flatten(), angles.cos())
    torch.testing.assert_close(sin.flatten(), angles.sin())
    half, _ = rotary_cos_sin(torch.tensor([[6]]), 4, 100.0, position_scale=0.5)
    torch.testing.assert_close(half, cos)  # linear scaling by 2 = positions halved


@pytest.mark.parametrize("scheme", POSITION_SCHEMES)
def test_sdpa_matches_torch_forward_and_backward(scheme: str) -> None:
    reference = tiny_model(_config(POSITION_SCHEMES[scheme]))
    fused = clone_with(reference, _config(POSITION_SCHEMES[scheme], "sdpa"))
    ids = random_ids(2, 20)
    ids_pad, mask = left_pad([ids[0, :20], ids[1, :13]])
    for inputs in ({"input_ids": ids}, {"input_ids": ids_pad, "attention_mask": mask}):
        out_ref = reference(**inputs, labels=inputs["input_ids"])
        out_fused = fused(**inputs, labels=inputs["input_ids"])
        assert_close(out_fused.logits, out_ref.logits)
        out_ref.loss.backward()
        out_fused.loss.backward()
    for (name, p_ref), p_fused in zip(
        reference.named_parameters(), fused.parameters(), strict=True
    ):
        assert p_ref.grad is not None and p_fused.grad is not None, name
        assert_close(p_fused.grad, p_ref.grad, name, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scheme", POSITION_SCHEMES)
def test_cached_decoding_equals_full_forward(scheme: str) -> None:
    model = tiny_model(_config(POSITION_SCHEMES[scheme]))
    ids = random_ids(2, 16)
    full, cached, _ = full_and_cached_logits(model, ids, prefix=9)
    assert_close(cached, full)
    assert torch.equal(
        generate(model, ids, max_new_tokens=6, do_sample=False),
        generate(model, ids, max_new_tokens=6, do_sample=False, use_cache=False),
    )


@pytest.mark.parametrize("scheme", ["rope_dail", "rope_window_gqa"])
def test_left_padding_does_not_change_real_token_logits(scheme: str) -> None:
    model = tiny_model(_config(POSITION_SCHEMES[scheme]))
    short = random_ids(1, 10, seed=3)[0]
    ids, mask = left_pad([random_ids(1, 16, seed=4)[0], short])
    padded = model(input_ids=ids, attention_mask=mask).logits[1, -10:]
    alone = model(short.unsqueeze(0)).logits[0]
    assert_close(padded, alone)


def test_sliding_window_limits_what_a_token_sees() -> None:
    """One layer, window 3: the logit at t depends on tokens t-3..t and on nothing earlier."""
    model = tiny_model(_config({"sliding_window_size": 3}, n_layers=1))
    ids = random_ids(1, 12)
    base = model(ids).logits[0, 10]
    outside, inside = ids.clone(), ids.clone()
    outside[0, 6] = (ids[0, 6] % 100) + 1  # 4 before position 10: outside the window
    inside[0, 7] = (ids[0, 7] % 100) + 1  # 3 before: inside
    assert_close(model(outside).logits[0, 10], base)
    assert not torch.allclose(model(inside).logits[0, 10], base)
    # a window as long as the sequence is plain causal attention
    wide = clone_with(model, _config({"sliding_window_size": 64}, n_layers=1))
    plain = clone_with(model, _config({}, n_layers=1))
    assert_close(wide(ids).logits, plain(ids).logits)
