"""Validation of ``MPTConfig``: invalid settings fail at construction, naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from llmfoundry.models.mpt import MPTConfig, MPTConfigError
from tests.models.mpt_helpers import mpt_7b_config_json

BASE: dict[str, Any] = {"d_model": 32, "n_heads": 4, "n_layers": 2, "vocab_size": 64}

# (overrides, a regex the message must match: it names the offending key)
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "alibi_and_rope": ({"attn_config": {"alibi": True, "rope": True}}, r"alibi and rope"),
    "d_model_not_divisible": ({"d_model": 30}, r"model\.d_model \(30\).*n_heads \(4\)"),
    "bad_attn_impl": (
        {"attn_config": {"attn_impl": "xformers"}},
        r"attn_config\.attn_impl='xformers' .*torch, flash, sdpa, triton, flex",
    ),
    "unknown_attn_key": ({"attn_config": {"alibi_bias": 8}}, r"attn_config\.alibi_bias is not"),
    "unknown_init_key": ({"init_config": {"std": 0.02}}, r"init_config\.std is not"),
    "unknown_ffn_key": ({"ffn_config": {"hidden": 64}}, r"ffn_config\.hidden is not"),
    "gqa_kv_heads_not_dividing": (
        {"attn_config": {"attn_type": "grouped_query_attention", "kv_n_heads": 3}},
        r"attn_config\.kv_n_heads=3",
    ),
    "gqa_without_kv_heads": (
        {"attn_config": {"attn_type": "grouped_query_attention"}},
        r"attn_config\.kv_n_heads=None",
    ),
    "bad_attn_type": ({"attn_config": {"attn_type": "linear"}}, r"attn_config\.attn_type='linear'"),
    "bad_norm_type": ({"norm_type": "batchnorm"}, r"model\.norm_type='batchnorm'"),
    "bad_ffn_type": ({"ffn_config": {"ffn_type": "moe"}}, r"ffn_config\.ffn_type='moe'"),
    "te_ffn_without_te": (
        {"ffn_config": {"ffn_type": "te_ln_mlp"}},
        r"ffn_config\.ffn_type needs NVIDIA TransformerEngine.*'te' extra",
    ),
    "bad_activation": (
        {"ffn_config": {"ffn_act_fn": {"name": "tanhh"}}},
        r"ffn_config\.ffn_act_fn\.name='tanhh' is not .*did you mean 'tanh'",
    ),
    "bad_activation_option": (
        {"ffn_config": {"ffn_act_fn": {"name": "gelu", "approximate": "sideways"}}},
        r"ffn_config\.ffn_act_fn=.*'sideways'.* does not run \(approximate argument",
    ),
    "bad_activation_keyword": (
        {"ffn_config": {"ffn_act_fn": {"name": "leaky_relu", "slope": 0.1}}},
        r"ffn_config\.ffn_act_fn=.*does not run \(.*'slope'",
    ),
    "bad_fan_mode": (
        {"init_config": {"fan_mode": "fan_inn"}},
        r"init_config\.fan_mode='fan_inn' is not supported; choose one of fan_in, fan_out",
    ),
    "bad_kaiming_nonlinearity": (
        {"init_config": {"name": "kaiming_uniform_", "init_nonlinearity": "gelu"}},
        r"init_config\.init_nonlinearity='gelu' is not supported; choose one of linear",
    ),
    "bad_init_name": ({"init_config": {"name": "orthogonal_"}}, r"init_config\.name"),
    "baseline_without_std": ({"init_config": {"name": "baseline_"}}, r"init_config\.init_std"),
    "bad_logit_scale": ({"logit_scale": "sqrt"}, r"model\.logit_scale='sqrt'"),
    "bad_embedding_fraction": ({"embedding_fraction": 0.0}, r"model\.embedding_fraction"),
    "bad_resid_pdrop": ({"resid_pdrop": 1.5}, r"model\.resid_pdrop"),
    "bad_attn_pdrop": ({"attn_config": {"attn_pdrop": -0.1}}, r"attn_config\.attn_pdrop"),
    "bad_attn_softcap": (
        {"attn_config": {"attn_logit_softcapping": 0}},
        r"attn_config\.attn_logit_softcapping",
    ),
    "bad_final_softcap": ({"final_logit_softcapping": -1.0}, r"model\.final_logit_softcapping"),
    "bad_init_device": ({"init_device": "gpu"}, r"model\.init_device='gpu'"),
    "bad_fc_type": ({"fc_type": "cuda"}, r"model\.fc_type='cuda'"),
    "te_fc_without_te": ({"fc_type": "te"}, r"model\.fc_type needs NVIDIA TransformerEngine"),
    "flex_with_dropout": (
        {"attn_config": {"attn_impl": "flex", "attn_pdrop": 0.1}},
        r"attn_impl='flex'.*attn_pdrop",
    ),
    "qk_ln_and_qk_gn": ({"attn_config": {"qk_ln": True, "qk_gn": True}}, r"qk_ln and qk_gn"),
    "fc_type_dict_with_options": (
        {"fc_type": {"name": "torch", "bias": False}},
        r"model\.fc_type=",
    ),
    # Legacy keys are accepted only at their inert value.
    "prefix_lm_on": ({"attn_config": {"prefix_lm": True}}, r"attn_config\.prefix_lm=True"),
    "kv_dim_set": ({"attn_config": {"kv_dim": 16}}, r"attn_config\.kv_dim=16"),
    "ffn_fc_type_te": ({"ffn_config": {"fc_type": "te"}}, r"ffn_config\.fc_type='te'"),
    # Not implemented: refused by name rather than silently ignored.
    "rope_bad_impl": ({"attn_config": {"rope": True, "rope_impl": "neox"}}, r"rope_impl='neox'"),
    "rope_dail_unknown_type": (
        {"attn_config": {"rope": True, "rope_dail_config": {"type": "yarn"}}},
        r"rope_dail_config\.type='yarn'.*original, xpos",
    ),
    "rope_hf_unknown_scaling": (
        {"attn_config": {"rope": True, "rope_impl": "hf", "rope_hf_config": {"type": "yarn"}}},
        r"rope_hf_config\.type='yarn'.*no_scaling, linear, dynamic",
    ),
    "sliding_window_zero": (
        {"attn_config": {"sliding_window_size": 0}},
        r"attn_config\.sliding_window_size=0",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_config_raises_naming_the_key(case: str) -> None:
    overrides, message = INVALID[case]
    with pytest.raises(MPTConfigError, match=message):
        MPTConfig(**{**BASE, **overrides})


def test_unknown_nested_key_lists_the_known_keys() -> None:
    with pytest.raises(MPTConfigError) as error:
        MPTConfig(**BASE, attn_config={"qk_layernorm": True})
    assert "qk_ln" in str(error.value) and "alibi_bias_max" in str(error.value)


def test_config_error_is_a_value_error() -> None:
    """Callers that catch ``ValueError`` (e.g. ``transformers``' loaders) still catch it."""
    assert issubclass(MPTConfigError, ValueError)


def test_nested_configs_are_filled_with_defaults() -> None:
    """A partial ``attn_config`` keeps LLM Foundry's defaults for every other key."""
    config = MPTConfig(**BASE, attn_config={"alibi": True})
    assert config.attn_config["alibi"] is True
    assert config.attn_config["attn_impl"] == "flash"
    assert config.attn_config["alibi_bias_max"] == 8
    assert config.attn_config["rope_dail_config"]["type"] == "original"
    assert config.init_config["init_div_is_residual"] is True
    assert config.ffn_config["ffn_type"] == "mptmlp"


def test_partial_nested_dict_merges_with_its_default() -> None:
    """Setting one key of a dict-valued option keeps the other keys of its default."""
    config = MPTConfig(**BASE, attn_config={"rope_dail_config": {"xpos_scale_base": 1024}})
    assert config.attn_config["rope_dail_config"] == {
        "type": "original",
        "pos_idx_in_fp32": True,
        "xpos_scale_base": 1024,
    }


def test_derived_sizes() -> None:
    assert MPTConfig(**BASE).kv_n_heads == 4
    mqa = MPTConfig(**BASE, attn_config={"attn_type": "multiquery_attention"})
    assert mqa.kv_n_heads == 1
    gqa = MPTConfig(**BASE, attn_config={"attn_type": "grouped_query_attention", "kv_n_heads": 2})
    assert gqa.kv_n_heads == 2
    assert MPTConfig(**BASE, expansion_ratio=2.5).ffn_hidden_size == 80
    assert MPTConfig(**BASE, ffn_config={"ffn_hidden_size": 72}).ffn_hidden_size == 72
    assert MPTConfig(**BASE).hidden_size == 32  # transformers' generic name


def test_published_mpt_7b_config_loads() -> None:
    """The fields of mosaicml/mpt-7b's config.json (legacy keys included) build a config."""
    config = MPTConfig.from_dict(mpt_7b_config_json())
    assert (config.d_model, config.n_layers, config.vocab_size) == (4096, 32, 50432)
    assert config.attn_config["alibi"] and config.no_bias and config.kv_n_heads == 32
    assert "prefix_lm" not in config.attn_config  # inert legacy key, dropped


def test_recent_llm_foundry_export_fields_load() -> None:
    """Recent LLM Foundry exports write ``fc_type`` as a dict, copy it into ``ffn_config`` and
    carry ``attn_config.kv_dim: null``; those configs must load."""
    config = MPTConfig(
        **BASE,
        fc_type={"name": "torch"},
        ffn_config={"ffn_type": "mptmlp", "fc_type": {"name": "torch"}},
        attn_config={"kv_dim": None},
    )
    assert config.fc_type == "torch"
    assert "fc_type" not in config.ffn_config and "kv_dim" not in config.attn_config
    assert MPTConfig(**BASE, ffn_config={"fc_type": "torch"}).ffn_config["ffn_type"] == "mptmlp"
