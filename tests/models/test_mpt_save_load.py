"""Saving and loading MPT with ``save_pretrained`` / ``from_pretrained``, and its weight names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from tests.fixtures import tiny_config, tiny_model
from tests.models.mpt_helpers import random_ids

BLOCK_PARAMS_WITH_BIAS = [
    "norm_1.weight",
    "norm_1.bias",
    "attn.Wqkv.weight",
    "attn.Wqkv.bias",
    "attn.out_proj.weight",
    "attn.out_proj.bias",
    "norm_2.weight",
    "norm_2.bias",
    "ffn.up_proj.weight",
    "ffn.up_proj.bias",
    "ffn.down_proj.weight",
    "ffn.down_proj.bias",
]


def _blocks(names: list[str], n_layers: int = 2) -> list[str]:
    return [f"transformer.blocks.{i}.{name}" for i in range(n_layers) for name in names]


# Published MPT checkpoints (mosaicml/mpt-7b & co.) use exactly these names.
EXPECTED_KEYS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "learned_pos_with_bias": (
        {},
        [
            "transformer.wte.weight",
            "transformer.wpe.weight",
            *_blocks(BLOCK_PARAMS_WITH_BIAS),
            "transformer.norm_f.weight",
            "transformer.norm_f.bias",
        ],
    ),
    "mpt_7b_style": (
        {"learned_pos_emb": False, "no_bias": True, "attn_config": {"alibi": True}},
        [
            "transformer.wte.weight",
            *_blocks([name for name in BLOCK_PARAMS_WITH_BIAS if name.endswith(".weight")]),
            "transformer.norm_f.weight",
        ],
    ),
    "qk_ln_glu_untied": (
        {
            "no_bias": True,
            "tie_word_embeddings": False,
            "ffn_config": {"ffn_type": "mptglu"},
            "attn_config": {"qk_ln": True, "attn_type": "grouped_query_attention", "kv_n_heads": 2},
        },
        [
            "transformer.wte.weight",
            "transformer.wpe.weight",
            *_blocks(
                [
                    "norm_1.weight",
                    "attn.Wqkv.weight",
                    "attn.q_ln.weight",
                    "attn.k_ln.weight",
                    "attn.out_proj.weight",
                    "norm_2.weight",
                    "ffn.up_proj.weight",
                    "ffn.down_proj.weight",
                    "ffn.gate_proj.weight",
                ]
            ),
            "transformer.norm_f.weight",
            "lm_head.weight",
        ],
    ),
}


@pytest.mark.parametrize("case", list(EXPECTED_KEYS))
def test_state_dict_uses_published_mpt_names(case: str, tmp_path: Path) -> None:
    """``state_dict()`` and the saved safetensors file carry exactly the published MPT names."""
    overrides, expected = EXPECTED_KEYS[case]
    model = tiny_model(tiny_config(**overrides))
    assert sorted(model.state_dict()) == sorted(expected)
    model.save_pretrained(tmp_path)
    assert sorted(load_file(tmp_path / "model.safetensors")) == sorted(expected)


def test_fused_qkv_shape_for_grouped_query_attention() -> None:
    """``Wqkv`` stacks q (d_model rows), then k and v (kv_n_heads * head_dim rows each)."""
    config = tiny_config(attn_config={"attn_type": "grouped_query_attention", "kv_n_heads": 2})
    model = tiny_model(config)
    wqkv = model.get_parameter("transformer.blocks.0.attn.Wqkv.weight")
    assert wqkv.shape == (32 + 2 * 2 * 8, 32)


SAVE_LOAD_CASES: dict[str, dict[str, Any]] = {
    "tied_learned_pos": {},
    "untied_lm_head": {"tie_word_embeddings": False},
    "alibi_no_bias_gqa": {
        "learned_pos_emb": False,
        "no_bias": True,
        "attn_config": {"alibi": True, "attn_type": "grouped_query_attention", "kv_n_heads": 2},
    },
}


@pytest.mark.parametrize("case", list(SAVE_LOAD_CASES))
def test_save_then_load_gives_identical_model(case: str, tmp_path: Path) -> None:
    """``from_pretrained`` restores every tensor bit for bit: nothing is re-initialized on load."""
    model = tiny_model(tiny_config(**SAVE_LOAD_CASES[case]))
    model.save_pretrained(tmp_path)
    loaded = MPTForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MPTForCausalLM)
    original, restored = model.state_dict(), loaded.state_dict()
    assert list(restored) == list(original)
    for name, tensor in original.items():
        assert torch.equal(restored[name], tensor), name
    ids = random_ids(2, 16)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    if model.config.tie_word_embeddings:
        assert loaded.lm_head is None
    else:
        assert loaded.lm_head is not None
        assert loaded.lm_head.weight.data_ptr() != loaded.transformer.wte.weight.data_ptr()
    assert loaded.config.to_dict()["attn_config"] == model.config.to_dict()["attn_config"]


def test_missing_tensors_are_initialized_and_the_rest_loaded(tmp_path: Path) -> None:
    """A checkpoint missing some tensors: those get MPT's init, all the others keep their values."""
    config = tiny_config(d_model=128, n_layers=4)
    model = MPTForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(0.5)
    model.save_pretrained(tmp_path)
    missing = {
        "transformer.wpe.weight",
        "transformer.blocks.0.attn.out_proj.weight",
        "transformer.blocks.0.attn.out_proj.bias",
        "transformer.blocks.1.norm_1.weight",
    }
    tensors = load_file(tmp_path / "model.safetensors")
    save_file(
        {k: v for k, v in tensors.items() if k not in missing}, tmp_path / "model.safetensors"
    )

    loaded = MPTForCausalLM.from_pretrained(tmp_path)
    params = dict(loaded.named_parameters())
    for name, param in params.items():
        if name not in missing:
            assert torch.all(param == 0.5), f"{name} was not loaded"
    assert params["transformer.blocks.0.attn.out_proj.bias"].abs().max() == 0
    assert torch.all(params["transformer.blocks.1.norm_1.weight"] == 1)
    # Kaiming-normal fan-in std sqrt(2/128), residual projection divided by sqrt(2 * 4 layers).
    out_proj_std = params["transformer.blocks.0.attn.out_proj.weight"].std().item()
    assert out_proj_std == pytest.approx((2 / 128) ** 0.5 / 8**0.5, rel=0.1)
    assert params["transformer.wpe.weight"].std().item() == pytest.approx((2 / 128) ** 0.5, rel=0.1)


def test_load_in_bfloat16(tmp_path: Path) -> None:
    """``dtype=torch.bfloat16`` gives a bf16 model holding the rounded saved weights."""
    model = tiny_model(tiny_config())
    model.save_pretrained(tmp_path)
    loaded = MPTForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    for name, param in loaded.state_dict().items():
        assert param.dtype == torch.bfloat16, name
        assert torch.equal(param, model.state_dict()[name].to(torch.bfloat16)), name
    with torch.no_grad():
        assert loaded(random_ids(1, 8)).logits.dtype == torch.bfloat16


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    """Every MPT field survives ``save_pretrained`` / ``from_pretrained`` of the config."""
    config = tiny_config(
        no_bias=True,
        logit_scale="inv_sqrt_d_model",
        final_logit_softcapping=30.0,
        use_pad_tok_in_ffn=False,
        ffn_config={"ffn_type": "mptglu", "ffn_act_fn": {"name": "gelu", "approximate": "tanh"}},
        init_config={"emb_init_std": 0.02, "init_div_is_residual": 2.0},
        attn_config={"alibi": True, "attn_type": "grouped_query_attention", "kv_n_heads": 2},
    )
    config.save_pretrained(tmp_path)
    loaded = MPTConfig.from_pretrained(tmp_path)
    for key in (
        "d_model",
        "n_heads",
        "n_layers",
        "no_bias",
        "logit_scale",
        "final_logit_softcapping",
        "use_pad_tok_in_ffn",
        "ffn_config",
        "init_config",
        "attn_config",
        "tie_word_embeddings",
    ):
        assert getattr(loaded, key) == getattr(config, key), key
    assert loaded.kv_n_heads == 2
