"""Checkpoints move between our MPT and transformers' native ``MptForCausalLM`` both ways.

A config the native class can express loads in either class from either one's
``save_pretrained`` folder and gives the same logits; one it cannot express is exported with
``model_type: llmfoundry_mpt`` so that, in a process without llmfoundry, only
``trust_remote_code`` (our bundled code) loads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, MptConfig, MptForCausalLM

from llmfoundry.command_utils.convert_composer_to_hf import save_mpt_as_hf
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.models.mpt.configuration_mpt import REMOTE_CODE_MODEL_TYPE
from tests.fixtures import randomize, tiny_model

from .mpt_helpers import VOCAB_SIZE, assert_close, generate, random_ids
from .transformers_only import without_llmfoundry_auto_classes

NATIVE_CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "clip_softmax_scale_eps": {
        "attn_config": {"clip_qkv": 0.4, "softmax_scale": 0.3},
        "layer_norm_epsilon": 1e-3,
    },
    "six_heads_untied": {"d_model": 48, "n_heads": 6, "tie_word_embeddings": False},
}


def _native(case: dict[str, Any]) -> MptForCausalLM:
    fields: dict[str, Any] = {
        "d_model": 32,
        "n_heads": 4,
        "n_layers": 2,
        "max_seq_len": 64,
        "vocab_size": VOCAB_SIZE,
        **case,
    }
    torch.manual_seed(0)
    model = MptForCausalLM(MptConfig(**fields)).eval()
    randomize(model, seed=1)
    return model


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("case", list(NATIVE_CASES))
def test_native_folder_loads_in_our_class(case: str, tmp_path: Path) -> None:
    native = _native(NATIVE_CASES[case])
    native.save_pretrained(tmp_path)
    ours = MPTForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(ours, MPTForCausalLM)
    assert ours.config.native_incompatibilities() == []
    assert not hasattr(ours.transformer, "wpe")  # alibi replaces the learned table
    ids = random_ids(2, 20)
    assert_close(_logits(ours, ids), _logits(native, ids))


@pytest.mark.parametrize("case", list(NATIVE_CASES))
def test_our_folder_loads_in_native_class(case: str, tmp_path: Path) -> None:
    """Our export of a natively expressible config loads without remote code, as the native
    class, and computes our logits; so does the folder written by plain ``save_pretrained``."""
    native_fields = NATIVE_CASES[case]
    ours = MPTForCausalLM.from_pretrained(_save_native(native_fields, tmp_path / "seed")).eval()
    randomize(ours, seed=5)
    exported = save_mpt_as_hf(ours, None, tmp_path / "export", "fp32")
    assert json.loads((exported / "config.json").read_text())["model_type"] == "mpt"
    with without_llmfoundry_auto_classes():  # what transformers alone does with the folder
        loaded = AutoModelForCausalLM.from_pretrained(exported)
    assert type(loaded) is MptForCausalLM
    ids = random_ids(2, 20, seed=2)
    assert_close(_logits(loaded.eval(), ids), _logits(ours, ids))
    ours.save_pretrained(tmp_path / "plain")
    assert_close(
        _logits(MptForCausalLM.from_pretrained(tmp_path / "plain").eval(), ids),
        _logits(ours, ids),
    )


def _save_native(fields: dict[str, Any], folder: Path) -> Path:
    _native(fields).save_pretrained(folder)
    return folder


def test_greedy_generation_matches_native(tmp_path: Path) -> None:
    native = _native({})
    native.save_pretrained(tmp_path)
    ours = MPTForCausalLM.from_pretrained(tmp_path).eval()
    ids = random_ids(2, 6, seed=4)
    kwargs = {"max_new_tokens": 10, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        assert torch.equal(generate(ours, ids, **kwargs), generate(native, ids, **kwargs))


INEXPRESSIBLE: dict[str, dict[str, Any]] = {
    "rope": {"attn_config": {"rope": True}, "learned_pos_emb": False},
    "learned_positions": {"learned_pos_emb": True},
    "gqa": {
        "attn_config": {"alibi": True, "attn_type": "grouped_query_attention", "kv_n_heads": 2}
    },
    "biases": {"attn_config": {"alibi": True}, "no_bias": False},
}


@pytest.mark.parametrize("case", list(INEXPRESSIBLE))
def test_inexpressible_export_needs_remote_code(case: str, tmp_path: Path) -> None:
    fields = {"no_bias": True, "expansion_ratio": 4, **INEXPRESSIBLE[case]}
    config = MPTConfig(
        d_model=32, n_heads=4, n_layers=2, max_seq_len=64, vocab_size=VOCAB_SIZE, **fields
    )
    assert config.native_incompatibilities()
    ours = tiny_model(config)
    exported = save_mpt_as_hf(ours, None, tmp_path / "export", "fp32")
    saved = json.loads((exported / "config.json").read_text())
    assert saved["model_type"] == REMOTE_CODE_MODEL_TYPE
    assert saved["auto_map"]["AutoModelForCausalLM"] == "modeling_mpt.MPTForCausalLM"
    with without_llmfoundry_auto_classes():  # transformers alone runs the bundled code
        with pytest.raises(ValueError, match="trust_remote_code"):
            AutoModelForCausalLM.from_pretrained(exported)
        remote = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True).eval()
    assert type(remote).__name__ == "MPTForCausalLM" and type(remote) is not MPTForCausalLM
    ids = random_ids(2, 20, seed=6)
    assert_close(_logits(remote, ids), _logits(ours, ids))
    # Our own class reads the folder too, and saves it back with the same model_type.
    again = MPTForCausalLM.from_pretrained(exported)
    assert again.config.model_type == "mpt"
    assert again.config.to_dict()["model_type"] == REMOTE_CODE_MODEL_TYPE


def test_remote_code_load_takes_attn_impl_and_max_seq_len_overrides(tmp_path: Path) -> None:
    """The MPT model-card recipe: edit the loaded config, then load the weights with it. An
    ALiBi model then runs (and generates) past the max_seq_len it was trained with."""
    config = MPTConfig(
        d_model=32,
        n_heads=4,
        n_layers=2,
        max_seq_len=16,
        vocab_size=VOCAB_SIZE,
        attn_config={"alibi": True, "attn_type": "grouped_query_attention", "kv_n_heads": 2},
    )
    ours = tiny_model(config)
    exported = save_mpt_as_hf(ours, None, tmp_path / "export", "fp32")
    loaded_config = AutoConfig.from_pretrained(exported, trust_remote_code=True)
    loaded_config.attn_config["attn_impl"] = "torch"
    loaded_config.max_seq_len = 48
    model = AutoModelForCausalLM.from_pretrained(
        exported, config=loaded_config, trust_remote_code=True
    ).eval()
    assert model.config.attn_config["attn_impl"] == "torch"
    assert model.config.max_seq_len == 48
    for block in cast(Any, model).transformer.blocks:
        assert block.attn.impl == "torch"
    ids = random_ids(1, 12, seed=8)
    out = generate(model, ids, max_new_tokens=30, do_sample=False, pad_token_id=0)
    assert out.shape[1] == 42 > config.max_seq_len
    with torch.no_grad():
        assert torch.isfinite(model(out).logits).all()
        # The cached continuation equals a fresh full forward past the old limit.
        full_next = model(out[:, :-1]).logits[:, -1].argmax(-1)
    assert torch.equal(full_next, out[:, -1])
