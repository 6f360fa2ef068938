"""``block_overrides`` (LLM Foundry's per-layer attention settings): the schema, per-layer
windows, ``nope`` layers, KV reuse, and every one of them through the KV cache."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch

from llmfoundry.models.mpt import MPTConfig, MPTConfigError
from tests.fixtures import clone_with, tiny_config, tiny_model
from tests.models.mpt_helpers import assert_close, full_and_cached_logits, generate, random_ids

ROPE = {"rope": True, "rope_impl": "hf"}


def _overrides(*names: str, **overrides: dict[str, Any]) -> dict[str, Any]:
    """``block_overrides`` with one layer per name, each override setting ``attn_config``."""
    return {
        "order": [{"name": name} for name in names],
        "overrides": {name: {"attn_config": attn} for name, attn in overrides.items()},
    }


def _config(
    attn: dict[str, Any], block_overrides: dict[str, Any] | None, **fields: Any
) -> MPTConfig:
    fields.setdefault("learned_pos_emb", False)
    return tiny_config(attn, block_overrides=block_overrides, **fields)


def test_llm_foundry_example_expands_and_resolves_reuse_chains() -> None:
    """The character.ai layout of LLM Foundry's docs; the expected indices are what LLM
    Foundry 0.22 resolves for it (a layer reusing a reusing layer reuses that one's source)."""
    block_overrides = {
        "order": [
            {"name": "default"},
            {
                "repeat": 2,
                "order": [
                    {"name": "sw"},
                    {"name": "sw_reuse"},
                    {"name": "sw"},
                    {"repeat": 2, "name": "sw_reuse"},
                    {"name": "reuse"},
                ],
            },
        ],
        "overrides": {
            "sw": {"attn_config": {"sliding_window_size": 4}},
            "sw_reuse": {"attn_config": {"sliding_window_size": 4, "reuse_kv_layer_idx": -1}},
            "reuse": {"attn_config": {"reuse_kv_layer_idx": -6}},
        },
    }
    layers = _config(ROPE, block_overrides, n_layers=13).layer_attn_configs()
    assert [layer["reuse_kv_layer_idx"] for layer in layers] == [
        None, None, 1, None, 3, 3, 0, None, 7, None, 9, 9, 0,
    ]  # fmt: skip
    assert [layer["sliding_window_size"] for layer in layers] == [-1] + ([4] * 5 + [-1]) * 2


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "missing_order": ({"overrides": {}}, r"block_overrides must have both 'order' and 'overrides'"),
    "too_few_layers": (_overrides("default"), r"expands to 1 layers but .* n_layers=2"),
    "unknown_name": (
        {"order": [{"name": "default"}, {"name": "local"}], "overrides": {}},
        r"order\[1\]\.name='local' is not defined",
    ),
    "not_overridable": (
        _overrides("default", "a", a={"rope_theta": 5}),
        r"overrides\.a\.attn_config\.rope_theta cannot be overridden per layer",
    ),
    "positive_reuse": (
        _overrides("default", "a", a={"reuse_kv_layer_idx": 1}),
        r"reuse_kv_layer_idx=1 must be a negative index",
    ),
    "reuse_before_first": (
        _overrides("a", "default", a={"reuse_kv_layer_idx": -1}),
        r"points before the first layer",
    ),
    "default_defined": (
        _overrides("default", "default", default={"nope": True}),
        r"cannot define 'default'",
    ),
    "reuse_x_fused": (
        _overrides("default", "a", a={"reuse_kv_x_layer_idx": -1}),
        r"reuse_kv_x_layer_idx needs attn_config\.fused_qkv: false",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_malformed_overrides_fail_naming_the_key(case: str) -> None:
    block_overrides, message = INVALID[case]
    with pytest.raises(MPTConfigError, match=message):
        _config(ROPE, block_overrides, n_layers=2)


def test_nope_is_refused_model_wide_and_next_to_learned_positions() -> None:
    with pytest.raises(MPTConfigError, match=r"attn_config\.nope cannot be the model-wide"):
        tiny_config({"nope": True})
    with pytest.raises(MPTConfigError, match=r"nope cannot be used with learned_pos_emb"):
        tiny_config(block_overrides=_overrides("default", "a", a={"nope": True}))


@pytest.mark.parametrize("scheme", [ROPE, {"alibi": True}], ids=["rope", "alibi"])
def test_nope_layers_have_no_position_encoding(scheme: dict[str, Any]) -> None:
    every_layer_nope = {
        "order": [{"name": "n", "repeat": 2}],
        "overrides": {"n": {"attn_config": {"nope": True}}},
    }
    model = tiny_model(_config(scheme, every_layer_nope))
    without_positions = clone_with(model, _config({}, None))
    one_nope = clone_with(model, _config(scheme, _overrides("default", "n", n={"nope": True})))
    with_positions = clone_with(model, _config(scheme, None))
    ids = random_ids(2, 10)
    with torch.no_grad():
        logits = model(ids).logits
        assert torch.equal(logits, without_positions(ids).logits)
        mixed = one_nope(ids).logits
        assert not torch.allclose(mixed, logits, atol=1e-3)
        assert not torch.allclose(mixed, with_positions(ids).logits, atol=1e-3)


def test_per_layer_sliding_windows() -> None:
    windowed = {
        "order": [{"name": "w", "repeat": 2}],
        "overrides": {"w": {"attn_config": {"sliding_window_size": 2}}},
    }
    model = tiny_model(_config(ROPE, windowed))
    model_wide = clone_with(model, _config({**ROPE, "sliding_window_size": 2}, None))
    second_only = clone_with(
        model, _config(ROPE, _overrides("default", "w", w={"sliding_window_size": 2}))
    )
    ids = random_ids(2, 10)
    with torch.no_grad():
        logits = model(ids).logits
        assert torch.equal(logits, model_wide(ids).logits)
        assert not torch.allclose(second_only(ids).logits, logits, atol=1e-3)


def test_reusing_layer_attends_with_the_earlier_layers_keys_and_values() -> None:
    """Layer 1 projects queries only and attends over layer 0's keys and values."""
    config = _config(
        {}, _overrides("default", "r", r={"reuse_kv_layer_idx": -1}), learned_pos_emb=True
    )
    model = tiny_model(config)
    first, second = (cast(Any, block) for block in model.transformer.blocks)
    assert not hasattr(second.attn, "Wqkv") and second.attn.Wq.weight.shape == (32, 32)
    ids = random_ids(1, 7)
    with torch.no_grad():
        hidden = model.transformer(ids, output_hidden_states=True).hidden_states
        x0, x1 = hidden[0], hidden[1]
        _, key, value = first.attn.Wqkv(first.norm_1(x0)).split(32, dim=-1)
        query = second.attn.Wq(second.norm_1(x1))
        batch, seq = ids.shape
        q, k, v = (t.view(batch, seq, 4, 8).transpose(1, 2) for t in (query, key, value))
        causal = torch.ones(seq, seq, dtype=torch.bool).tril()
        scores = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(~causal, float("-inf"))
        attended = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(batch, seq, 32)
        x2 = x1 + second.attn.out_proj(attended)
        x2 = x2 + second.ffn(second.norm_2(x2))
        assert_close(model.transformer.norm_f(x2), hidden[2])


CACHED: dict[str, tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]] = {
    "head_dim_gqa_rope_hf": (
        {**ROPE, "attn_type": "grouped_query_attention", "kv_n_heads": 2},
        None,
        {"head_dim": 12},
    ),
    "xpos": ({"rope": True, "rope_dail_config": {"type": "xpos", "xpos_scale_base": 8}}, None, {}),
    "window_reuse_nope_tuning": (
        {"rope": True, "attn_temperature_tuning": {"floor_scale": 3, "attn_scale": 0.5}},
        {
            "order": [{"name": "default"}, {"name": "w"}, {"name": "r"}, {"name": "n"}],
            "overrides": {
                "w": {"attn_config": {"sliding_window_size": 3}},
                "r": {"attn_config": {"reuse_kv_layer_idx": -1}},
                "n": {
                    "attn_config": {"nope": True, "attn_temperature_tuning": {"attn_scale": 0.0}}
                },
            },
        },
        {"n_layers": 4},
    ),
    "reuse_x_alibi": (
        {"alibi": True, "fused_qkv": False},
        _overrides("default", "x", "default", x={"reuse_kv_x_layer_idx": -1}),
        {"n_layers": 3},
    ),
}


@pytest.mark.parametrize("case", list(CACHED))
def test_cached_decoding_equals_the_full_forward(case: str) -> None:
    attn, block_overrides, fields = CACHED[case]
    model = tiny_model(_config(attn, block_overrides, **fields))
    full, cached, _ = full_and_cached_logits(model, random_ids(2, 10, seed=3), prefix=7)
    assert_close(cached, full)


@pytest.mark.slow
def test_generation_with_kv_reuse_matches_uncached_generation() -> None:
    attn, block_overrides, fields = CACHED["window_reuse_nope_tuning"]
    model = tiny_model(_config(attn, block_overrides, **fields))
    ids = random_ids(1, 5, seed=4)
    kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    cached = generate(model, ids, use_cache=True, **kwargs)
    assert torch.equal(cached, generate(model, ids, use_cache=False, **kwargs))
