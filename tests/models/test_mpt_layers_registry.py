"""MPT's layers through LLM Foundry's layer registries: the built-ins under LLM Foundry's names,
layers registered in code, and plug-in layers declared by a package's entry points."""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import catalogue
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from llmfoundry import layers_registry
from llmfoundry.models.hf.export import write_mpt_folder
from llmfoundry.models.mpt import MPTConfig, MPTConfigError, MPTForCausalLM
from llmfoundry.models.mpt.attention import GroupedQueryAttention
from llmfoundry.models.mpt.fc import mark_residual
from llmfoundry.models.mpt.ffn import MPTGLU, MPTMLP
from llmfoundry.models.mpt.norm import LPLayerNorm, LPRMSNorm, RMSNorm, TritonRMSNorm
from tests.fixtures import clone_with, tiny_model
from tests.models.mpt_helpers import assert_close, random_ids

PLUGIN_MODULE = "h1_fake_mpt_layers"
PLUGIN_DIST = "h1-fake-mpt-layers"
# A plug-in package: a norm that doubles LayerNorm's output, and an attention implementation
# (LLM Foundry's calling convention) that doubles the softmax scale.
PLUGIN_SOURCE = """
import math
import torch
from torch import nn


class DoubledLayerNorm(nn.LayerNorm):
    def forward(self, x):
        return 2 * super().forward(x)


def double_scale_attention(query, key, value, n_heads, kv_n_heads, softmax_scale=None,
                           attn_bias=None, is_causal=True, **kwargs):
    b, s, _ = query.shape
    d = query.shape[-1] // n_heads
    q = query.view(b, s, n_heads, d).transpose(1, 2)
    k = key.view(b, -1, kv_n_heads, d).transpose(1, 2).repeat_interleave(n_heads // kv_n_heads, 1)
    v = value.view(b, -1, kv_n_heads, d).transpose(1, 2).repeat_interleave(n_heads // kv_n_heads, 1)
    scores = q @ k.transpose(-1, -2) * (2 * (softmax_scale or 1 / math.sqrt(d)))
    if attn_bias is not None:
        scores = scores + attn_bias
    if is_causal:
        k_len = k.shape[-2]
        causal = torch.ones(s, k_len, dtype=torch.bool).tril(k_len - s)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    out = torch.softmax(scores, dim=-1) @ v
    return out.transpose(1, 2).reshape(b, s, n_heads * d), None, None
"""
YAML_MODEL = """
d_model: 32
n_heads: 4
n_layers: 2
expansion_ratio: 2
max_seq_len: 64
vocab_size: 128
norm_type: doubled_layernorm
attn_config:
  attn_impl: double_scale
  alibi: true
"""


def _refresh_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a fresh process would see: catalogue reads the entry points once, at import."""
    monkeypatch.setattr(catalogue, "AVAILABLE_ENTRY_POINTS", importlib.metadata.entry_points())


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plug-in package installed on ``sys.path`` (a module and its ``.dist-info``)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    dist_info = site / f"{PLUGIN_MODULE}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {PLUGIN_DIST}\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[llmfoundry_norms]\ndoubled_layernorm = {PLUGIN_MODULE}:DoubledLayerNorm\n\n"
        f"[llmfoundry_attention_implementations]\n"
        f"double_scale = {PLUGIN_MODULE}:double_scale_attention\n"
    )
    monkeypatch.syspath_prepend(str(site))
    _refresh_entry_points(monkeypatch)
    yield site
    sys.modules.pop(PLUGIN_MODULE, None)


def test_registries_hold_the_built_in_layers_under_llm_foundry_names() -> None:
    expected = {
        "norms": {
            "layernorm": nn.LayerNorm,
            "low_precision_layernorm": LPLayerNorm,
            "rmsnorm": RMSNorm,
            "low_precision_rmsnorm": LPRMSNorm,
            "triton_rmsnorm": TritonRMSNorm,
        },
        "ffns": {"mptmlp": MPTMLP, "mptglu": MPTGLU},
        "attention_classes": dict.fromkeys(
            ("multihead_attention", "multiquery_attention", "grouped_query_attention"),
            GroupedQueryAttention,
        ),
    }
    for registry_name, entries in expected.items():
        registry = getattr(layers_registry, registry_name)
        for name, layer in entries.items():
            assert registry.get(name) is layer, (registry_name, name)
    assert layers_registry.fcs.get("torch") is nn.Linear and "te" in layers_registry.fcs
    assert "te_ln_mlp" in layers_registry.ffns_with_norm
    assert {"torch", "flash", "flex"} <= set(layers_registry.attention_implementations.get_all())
    assert set(layers_registry.param_init_fns.get_all()) >= {
        "default_",
        "baseline_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "neox_init_",
        "small_init_",
        "xavier_uniform_",
        "xavier_normal_",
    }
    assert list(layers_registry.module_init_fns.get_all()) == [
        "fc",
        "embedding",
        "norm",
        "multihead_attention",
        "te_layernorm_mlp",
        "moe",
    ]


def test_registered_builtins_take_llm_foundry_arguments() -> None:
    """Code written for LLM Foundry calls the entries with its keyword arguments."""
    norm = layers_registry.norms.get("rmsnorm")(normalized_shape=4, eps=0.0, device=None)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(norm(x), x / math.sqrt(7.5))
    ffn = layers_registry.ffns.get("mptglu")(
        d_model=4, expansion_ratio=2, device=None, bias=False, fc_type={"name": "torch"}
    )
    assert isinstance(ffn, MPTGLU)
    assert ffn.gate_proj.weight.shape == (8, 4) and ffn.up_proj.bias is None
    linear = nn.Linear(3, 2)
    mark_residual(linear)  # what LLM Foundry code sets by hand: `_is_residual = True`
    handled = layers_registry.module_init_fns.get("fc")(
        linear,
        init_fn_=lambda w: nn.init.constant_(w, 1.0),
        init_div_is_residual=True,
        div_is_residual=4.0,
    )
    assert handled and torch.equal(linear.weight, torch.full((2, 3), 0.25))
    assert torch.equal(linear.bias, torch.zeros(2))
    assert not layers_registry.module_init_fns.get("fc")(nn.Embedding(3, 2), init_fn_=print)


def test_registered_torch_attention_matches_the_formula() -> None:
    """LLM Foundry's convention: (b, s, h*d) tensors in, (output, weights, past) out."""
    query = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # one head of size 2, two tokens
    key = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    value = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    out, weights, past = layers_registry.attention_implementations.get("torch")(
        query, key, value, n_heads=1, kv_n_heads=1, softmax_scale=1.0
    )
    # Token 0 sees only key 0; token 1 scores keys 0, 1 as 0 and 1.
    p = math.e / (1 + math.e)
    expected = torch.tensor([[[1.0, 2.0], [1 * (1 - p) + 3 * p, 2 * (1 - p) + 4 * p]]])
    torch.testing.assert_close(out, expected)
    assert weights is None and past is not None and torch.equal(past[0], key)


def test_layer_registered_in_code_builds_into_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    class ScaledRMSNorm(RMSNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    key = ("llmfoundry", "norms", "scaled_rmsnorm")
    layers_registry.norms.register("scaled_rmsnorm", func=ScaledRMSNorm)
    monkeypatch.setitem(catalogue.REGISTRY, key, ScaledRMSNorm)  # removed after the test
    base: dict[str, Any] = {
        "d_model": 32,
        "n_heads": 4,
        "n_layers": 2,
        "max_seq_len": 32,
        "vocab_size": 128,
    }
    config = MPTConfig(**base, norm_type="scaled_rmsnorm", attn_config={"attn_impl": "torch"})
    model = tiny_model(config)
    assert isinstance(model.transformer.norm_f, ScaledRMSNorm)
    assert config.layer_sources["norm_type"]["module"] == __name__
    reference = tiny_model(
        MPTConfig(**base, norm_type="rmsnorm", attn_config={"attn_impl": "torch"})
    )
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if name.endswith(("norm_1.weight", "norm_2.weight", "norm_f.weight")):
                param.copy_(2 * model.get_parameter(name))
            else:
                param.copy_(model.get_parameter(name))
        ids = random_ids(2, 9)
        assert_close(model(ids).logits, reference(ids).logits)


def _plugin_and_reference_models(plugin_config: MPTConfig) -> tuple[MPTForCausalLM, MPTForCausalLM]:
    """The plug-in model and a built-in one computing the same function with its weights:
    LayerNorm with doubled weights and biases, and twice the softmax scale."""
    model = tiny_model(plugin_config)
    fields = plugin_config.to_dict()
    fields["norm_type"] = "layernorm"
    fields["attn_config"] = {
        **fields["attn_config"],
        "attn_impl": "torch",
        "softmax_scale": 2 * (1 / math.sqrt(8)),  # the plug-in doubles the default scale
    }
    reference = clone_with(model, MPTConfig.from_dict(fields))
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if ".norm_" in name or "norm_f" in name:
                param.mul_(2)
    return model, reference


def test_plugin_layers_from_entry_points_change_the_model(plugin: Path) -> None:
    fields: Any = OmegaConf.to_container(OmegaConf.create(YAML_MODEL))
    config = MPTConfig(**fields)
    model, reference = _plugin_and_reference_models(config)
    norm_class = type(model.transformer.blocks[0].norm_1)
    assert (norm_class.__module__, norm_class.__name__) == (PLUGIN_MODULE, "DoubledLayerNorm")
    assert cast(Any, model.transformer.blocks[1]).attn.external_impl is not None
    ids = random_ids(2, 11)
    with torch.no_grad():
        logits = model(ids).logits
        # The plug-in's matmuls run on differently laid-out tensors: fp32 sums in another order.
        assert_close(logits, reference(ids).logits, atol=2e-4, rtol=1e-4)
        builtin = clone_with(model, MPTConfig(**{**fields, "norm_type": "layernorm"}))
        assert not torch.allclose(logits, builtin(ids).logits, atol=1e-3)
    assert config.layer_sources["norm_type"] == {
        "kind": "norms",
        "name": "doubled_layernorm",
        "module": PLUGIN_MODULE,
        "distribution": PLUGIN_DIST,
    }
    assert config.layer_sources["attn_config.attn_impl"]["distribution"] == PLUGIN_DIST


def test_export_records_the_plugin_and_loads_only_where_it_is_installed(
    plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields: Any = OmegaConf.to_container(OmegaConf.create(YAML_MODEL))
    model = tiny_model(MPTConfig(**fields))
    folder = tmp_path / "export"
    write_mpt_folder(model, None, folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["layer_sources"]["norm_type"]["distribution"] == PLUGIN_DIST
    # The exported code alone (no llmfoundry resolver: only entry points) finds the plug-in.
    remote_class = get_class_from_dynamic_module("modeling_mpt.MPTForCausalLM", folder)
    assert not remote_class.__module__.startswith("llmfoundry")
    remote = remote_class.from_pretrained(folder).eval()
    ids = random_ids(1, 7)
    with torch.no_grad():
        assert_close(remote(ids).logits, model(ids).logits)
    # Uninstall the plug-in: loading now fails in one line naming the package and the key.
    for path in sorted(plugin.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    sys.modules.pop(PLUGIN_MODULE, None)
    _refresh_entry_points(monkeypatch)
    for load in (remote_class.from_pretrained, MPTForCausalLM.from_pretrained):
        with pytest.raises(ValueError) as error:
            load(folder)
        message = str(error.value)
        assert "\n" not in message
        assert (
            f"model.norm_type='doubled_layernorm' is a layer of the package '{PLUGIN_DIST}'"
            in message
        )
        assert f"pip install {PLUGIN_DIST}" in message


def test_unknown_layer_name_lists_builtins_and_the_entry_point_group() -> None:
    with pytest.raises(MPTConfigError) as error:
        MPTConfig(d_model=32, n_heads=4, n_layers=1, norm_type="batchnorm")
    message = str(error.value)
    assert "model.norm_type='batchnorm' is not supported" in message
    assert "low_precision_layernorm" in message and "llmfoundry_norms" in message


def test_layer_sources_is_recorded_by_the_config_not_a_yaml_key() -> None:
    from llmfoundry.models.hf.composer_mpt import build_mpt_config
    from llmfoundry.utils.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"model\.layer_sources is not a valid key"):
        build_mpt_config({"d_model": 16, "n_heads": 2, "layer_sources": {}})
