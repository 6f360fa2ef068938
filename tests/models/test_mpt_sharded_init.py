"""Seeded per-module initialization (``models/mpt/sharded_init``): the initial weights depend on
the seed and the parameter names only, so CPU and meta builds agree bit for bit."""

from __future__ import annotations

from typing import cast

import torch

from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM, keep_meta_for_sharding
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.models.mpt.sharded_init import module_name, module_seed
from tests.fixtures import tiny_config
from tests.models.test_composer_mpt import TINY

CONFIG = {"tie_word_embeddings": False, "no_bias": False, "n_layers": 3}


def _cpu_build(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return MPTForCausalLM(tiny_config(**CONFIG)).state_dict()


def _assert_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert torch.equal(got[name], value), name


def test_meta_build_then_init_equals_cpu_build() -> None:
    expected = _cpu_build(5)
    torch.manual_seed(5)
    with torch.device("meta"):
        model = MPTForCausalLM(tiny_config(**CONFIG))
    model.to_empty(device="cpu")
    model.init_weights()
    _assert_equal(model.state_dict(), expected)


def test_param_init_fn_module_by_module_in_any_order_equals_cpu_build() -> None:
    """Composer's FSDP materialization: each module's to_empty, then our param_init_fn."""
    expected = _cpu_build(5)
    torch.manual_seed(5)
    with torch.device("meta"):
        model = MPTForCausalLM(tiny_config(**CONFIG))
    for module in reversed(list(model.modules())):
        module.to_empty(device="cpu", recurse=False)
        torch.rand(7)  # other draws in between change nothing
        model.param_init_fn(module)
    _assert_equal(model.state_dict(), expected)


def test_weights_follow_the_seed_not_earlier_draws() -> None:
    first = _cpu_build(5)
    torch.manual_seed(5)
    torch.rand(1000)
    _assert_equal(MPTForCausalLM(tiny_config(**CONFIG)).state_dict(), first)
    other = _cpu_build(6)
    assert not torch.equal(other["transformer.wte.weight"], first["transformer.wte.weight"])


def test_composer_meta_build_matches_cpu_and_can_stay_on_meta() -> None:
    kwargs = {**TINY, "tie_word_embeddings": False}
    torch.manual_seed(3)
    cpu = ComposerMPTCausalLM(init_device="cpu", **kwargs).model.state_dict()
    torch.manual_seed(3)
    meta = ComposerMPTCausalLM(init_device="meta", **kwargs).model.state_dict()
    _assert_equal(meta, cpu)
    with keep_meta_for_sharding():
        kept = ComposerMPTCausalLM(init_device="meta", **kwargs)
        mixed = ComposerMPTCausalLM(init_device="mixed", **kwargs)
    assert all(p.is_meta for p in kept.parameters())
    assert not any(p.is_meta for p in mixed.parameters()), "only init_device meta is kept"
    metric = kept.get_metrics(is_train=False)["LanguageCrossEntropy"]
    assert cast(torch.Tensor, metric.sum_loss).device.type == "cpu", "the wrapper is real"


def test_module_names_and_seeds_are_the_checkpoint_names() -> None:
    model = MPTForCausalLM(tiny_config(**CONFIG))
    wqkv = model.get_submodule("transformer.blocks.1.attn.Wqkv")
    assert module_name(model, wqkv) == "transformer.blocks.1.attn.Wqkv"
    assert module_name(model.transformer, wqkv, "transformer.") == "transformer.blocks.1.attn.Wqkv"
    # A module replaced after the names were cached is found under its name.
    model.lm_head = torch.nn.Linear(32, 64, bias=False)
    assert module_name(model, model.lm_head) == "lm_head"
    assert module_seed(5, "transformer.wte") == module_seed(5, "transformer.wte")
    assert module_seed(5, "transformer.wte") != module_seed(6, "transformer.wte")
    assert 0 <= module_seed(5, "lm_head") < 2**63
