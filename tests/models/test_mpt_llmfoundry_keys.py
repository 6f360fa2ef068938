"""MPT config keys as LLM Foundry spells them, each checked for its effect on the model:
``head_dim``, ``attention_bias``, ``attn_temperature_tuning``, XPos RoPE, ``triton_rmsnorm``,
``init_config.name: default_``, and config.json files in LLM Foundry 0.22's layout."""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import nn
from transformers.dynamic_module_utils import get_imports

import llmfoundry.models.mpt as mpt_package
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.models.mpt.attention import AttentionInputs, temperature_scales
from llmfoundry.models.mpt.norm import TritonRMSNorm
from llmfoundry.models.mpt.param_init import init_mpt_module
from llmfoundry.models.mpt.rotary import apply_rotary, rotary_cos_sin, xpos_scale
from tests.fixtures import clone_with, tiny_config, tiny_model
from tests.models.mpt_helpers import assert_close, lf022_config_json, random_ids

BASE: dict[str, Any] = {"d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 32}


def manual_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    n_heads: int,
    head_dim: int,
    scale: float,
) -> torch.Tensor:
    """Causal softmax attention by the textbook, on ``(b, s, heads * head_dim)`` tensors."""
    batch, seq, _ = query.shape
    q = query.view(batch, seq, n_heads, head_dim).transpose(1, 2)
    kv_heads = key.shape[-1] // head_dim
    k, v = (
        t.view(batch, seq, kv_heads, head_dim)
        .transpose(1, 2)
        .repeat_interleave(n_heads // kv_heads, 1)
        for t in (key, value)
    )
    scores = q @ k.transpose(-1, -2) * scale
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(batch, seq, n_heads * head_dim)


def _attention(config: MPTConfig) -> Any:
    """The first block's attention of a randomized model built from ``config``."""
    return cast(Any, tiny_model(config).transformer.blocks[0]).attn


def test_head_dim_decouples_the_head_size_from_d_model() -> None:
    """Heads of 16 with d_model 32 / 4 heads; the softmax scale stays 1/sqrt(d_model/n_heads)."""
    config = tiny_config(
        head_dim=16, attn_config={"attn_type": "grouped_query_attention", "kv_n_heads": 2}
    )
    attn = _attention(config)
    assert attn.Wqkv.weight.shape == (4 * 16 + 2 * 2 * 16, 32)
    assert attn.out_proj.weight.shape == (32, 4 * 16)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        query, key, value = attn.Wqkv(x).split([64, 32, 32], dim=-1)
        expected = attn.out_proj(manual_attention(query, key, value, 4, 16, 1 / math.sqrt(8)))
        assert_close(attn(x, AttentionInputs()), expected)


def test_attention_bias_gives_only_the_qkv_projections_biases() -> None:
    names = set(tiny_model(tiny_config(no_bias=True, attention_bias=True)).state_dict())
    assert "transformer.blocks.0.attn.Wqkv.bias" in names
    assert not any(n.endswith("bias") and "Wqkv" not in n for n in names)
    names = set(tiny_model(tiny_config(attention_bias=False)).state_dict())
    assert "transformer.blocks.0.attn.Wqkv.bias" not in names
    assert "transformer.blocks.0.attn.out_proj.bias" in names
    # Unset, it follows no_bias, and config.json carries the resolved value as LLM Foundry's does.
    assert tiny_config(no_bias=True).to_dict()["attention_bias"] is False
    assert tiny_config().to_dict()["attention_bias"] is True


def test_temperature_scales_follow_the_formula() -> None:
    scales = temperature_scales(torch.arange(10), floor_scale=4, attn_scale=0.5)
    low, mid, high = 1.0, 1 + 0.5 * math.log(2), 1 + 0.5 * math.log(3)
    torch.testing.assert_close(scales, torch.tensor([low] * 3 + [mid] * 4 + [high] * 3))


def test_temperature_tuning_scales_the_queries_by_position() -> None:
    tuning = {"floor_scale": 2, "attn_scale": 0.5}
    attn = _attention(tiny_config(attn_config={"attn_temperature_tuning": tuning}))
    x = torch.randn(1, 6, 32)
    positions = torch.arange(6).unsqueeze(0)
    with torch.no_grad():
        query, key, value = attn.Wqkv(x).split(32, dim=-1)
        query = query * temperature_scales(positions, 2, 0.5).unsqueeze(-1)
        expected = attn.out_proj(manual_attention(query, key, value, 4, 8, 1 / math.sqrt(8)))
        actual = attn(x, AttentionInputs(positions=positions))
        assert_close(actual, expected)
        # Off at LLM Foundry's default (attn_scale 0): positions change nothing.
        plain = _attention(tiny_config())
        plain.load_state_dict(attn.state_dict())
        query, key, value = plain.Wqkv(x).split(32, dim=-1)
        expected = plain.out_proj(manual_attention(query, key, value, 4, 8, 1 / math.sqrt(8)))
        assert_close(plain(x, AttentionInputs(positions=positions)), expected)


def test_xpos_weights_each_score_by_the_relative_position() -> None:
    """score(i, j) = sum over pairs p of |q_p||k_p| cos((i - j) theta_p) zeta_p^((i - j) / base)
    for identical q, k pairs, whatever the centre; zeta_p = (2p + 0.4 d) / (1.4 d)."""
    head_dim, theta, base = 4, 10000.0, 4.0
    vec = torch.ones(1, 1, 1, head_dim)

    def score(i: int, j: int, center: float) -> float:
        q_cos, q_sin = rotary_cos_sin(torch.tensor([[i]]), head_dim, theta)
        k_cos, k_sin = rotary_cos_sin(torch.tensor([[j]]), head_dim, theta)
        q_scale = xpos_scale(torch.tensor([[i]]), head_dim, base, center)
        k_scale = xpos_scale(torch.tensor([[j]]), head_dim, base, center)
        q = apply_rotary(vec, q_cos, q_sin, q_scale)
        k = apply_rotary(vec, k_cos, k_sin, k_scale.reciprocal())
        return float((q * k).sum())

    zeta = [(2 * p + 0.4 * head_dim) / (1.4 * head_dim) for p in range(2)]
    freq = [theta ** (-2 * p / head_dim) for p in range(2)]
    expected = sum(2 * math.cos(3 * freq[p]) * zeta[p] ** (3 / base) for p in range(2))
    assert score(5, 2, center=3) == pytest.approx(expected, rel=1e-6)
    assert score(5, 2, center=40) == pytest.approx(expected, rel=1e-5)


def test_xpos_model_logits_do_not_depend_on_the_centre() -> None:
    """The centre (max_seq_len // 2) cancels in every score: it only keeps numbers in range."""
    xpos = {"rope": True, "rope_dail_config": {"type": "xpos", "xpos_scale_base": 16}}
    model = tiny_model(tiny_config(attn_config=xpos, learned_pos_emb=False, max_seq_len=16))
    wider = clone_with(model, tiny_config(attn_config=xpos, learned_pos_emb=False, max_seq_len=64))
    original = clone_with(model, tiny_config(attn_config={"rope": True}, learned_pos_emb=False))
    ids = random_ids(2, 12)
    with torch.no_grad():
        logits = model(ids).logits
        assert_close(wider(ids).logits, logits, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(original(ids).logits, logits, atol=1e-2)


def test_triton_rmsnorm_is_rmsnorm_off_cuda() -> None:
    model = tiny_model(tiny_config(norm_type="triton_rmsnorm"))
    assert isinstance(model.transformer.norm_f, TritonRMSNorm)
    reference = clone_with(model, tiny_config(norm_type="rmsnorm"))
    ids = random_ids(2, 9)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_default_init_is_pytorchs_own() -> None:
    config = tiny_config(d_model=64, init_config={"name": "default_"})
    linear = nn.Linear(64, 32)
    torch.manual_seed(3)
    init_mpt_module(linear, config)
    torch.manual_seed(3)
    reference = nn.Linear(64, 32)  # its constructor runs reset_parameters
    assert torch.equal(linear.weight, reference.weight) and torch.equal(linear.bias, reference.bias)
    torch.manual_seed(0)
    model = MPTForCausalLM(config)
    # Residual projections are not divided: PyTorch's bound 1/sqrt(fan_in) is reached.
    out_proj = cast(Any, model.transformer.blocks[0]).attn.out_proj.weight
    assert 0.9 / 8 < out_proj.abs().max() <= 1 / 8
    assert 0.95 < model.transformer.wte.weight.std() < 1.05  # nn.Embedding's N(0, 1)


def test_kv_n_heads_is_written_only_for_grouped_query_attention() -> None:
    assert "kv_n_heads" not in tiny_config().to_dict()["attn_config"]
    gqa = tiny_config(attn_config={"attn_type": "grouped_query_attention", "kv_n_heads": 2})
    assert gqa.to_dict()["attn_config"]["kv_n_heads"] == 2


# A config.json LLM Foundry 0.22 writes (its key names and defaults).
LLM_FOUNDRY_0_22 = lf022_config_json(tiny_config(expansion_ratio=4, no_bias=False))


def test_llm_foundry_0_22_config_json_loads(tmp_path: Path) -> None:
    config = MPTConfig.from_dict(LLM_FOUNDRY_0_22)
    assert config.attn_config["nope"] is False
    assert config.attn_config["attn_temperature_tuning"] == {"attn_scale": 0.0, "floor_scale": 8192}
    assert config.head_dim is None and config.attention_bias is True and config.fc_type == "torch"
    model = tiny_model(config)
    model.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(LLM_FOUNDRY_0_22))
    loaded = MPTForCausalLM.from_pretrained(tmp_path).eval()
    ids = random_ids(2, 8)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_exported_sources_import_nothing_transformers_would_demand() -> None:
    """transformers refuses remote code importing a package that is not installed; the
    optional kernels (flash-attn, TransformerEngine) are imported by name, out of its sight."""
    allowed = {"torch", "transformers"} | set(sys.stdlib_module_names)
    folder = Path(mpt_package.__file__).parent
    for path in sorted(folder.glob("*.py")):
        if path.name != "__init__.py":
            assert set(get_imports(path)) <= allowed, path.name


def _sibling_imports(path: Path) -> set[str]:
    """The sibling modules ``path`` imports (``from .x import y``), anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    }


@pytest.mark.parametrize("entry", ["configuration_mpt", "modeling_mpt"])
def test_auto_map_modules_import_every_sibling_they_need_directly(entry: str) -> None:
    """transformers 4.x copies a remote-code module and the files it imports directly, not the
    files those import: the two auto_map modules must name every sibling they reach."""
    folder = Path(mpt_package.__file__).parent
    direct = _sibling_imports(folder / f"{entry}.py")
    reached, todo = set(), [entry]
    while todo:
        module = todo.pop()
        for sibling in _sibling_imports(folder / f"{module}.py") - reached:
            reached.add(sibling)
            todo.append(sibling)
    assert reached - {entry} <= direct, sorted(reached - direct - {entry})


def test_ffn_config_expansion_ratio_overrides_the_models(tmp_path: Path) -> None:
    # LLM Foundry's mpt-30b/mpt-760m YAMLs set it there; the FFN takes it over the top-level one.
    config = tiny_config(expansion_ratio=2, ffn_config={"expansion_ratio": 3})
    ffn = cast(Any, tiny_model(config).transformer.blocks[0]).ffn
    assert ffn.up_proj.weight.shape == (96, 32)
    assert config.ffn_hidden_size == 96
    moe = tiny_config(
        ffn_config={"ffn_type": "torch_dmoe", "moe_num_experts": 2, "expansion_ratio": 3}
    )
    assert moe.ffn_hidden_size == 96
    # config.json holds the key only when it was set (LLM Foundry's loader cannot take a null).
    assert "expansion_ratio" not in tiny_config().to_dict()["ffn_config"]
    config.save_pretrained(tmp_path)
    assert MPTConfig.from_pretrained(tmp_path).ffn_config["expansion_ratio"] == 3
    with pytest.raises(
        ValueError, match=r"^model\.ffn_config\.expansion_ratio=0 must be a positive"
    ):
        tiny_config(ffn_config={"expansion_ratio": 0})
