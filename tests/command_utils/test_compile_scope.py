"""``compile_config.scope``: Composer's whole-model compile, or each MPT block compiled in place."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from llmfoundry.command_utils.train import compile_model_or_blocks
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import tiny_config


class Wrapper(torch.nn.Module):
    """Stands for a Composer model: the HF model is its ``model``."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.model = inner


def tiny_mpt() -> MPTForCausalLM:
    return MPTForCausalLM(tiny_config(max_seq_len=16))


def test_no_compile_config_compiles_nothing() -> None:
    assert compile_model_or_blocks(None, Wrapper(tiny_mpt())) is None


def test_scope_model_hands_the_rest_to_composer() -> None:
    options = {"scope": "model", "mode": "max-autotune", "dynamic": False}
    assert compile_model_or_blocks(options, Wrapper(tiny_mpt())) == {
        "mode": "max-autotune",
        "dynamic": False,
    }
    # LLM Foundry's own compile_config (no scope) goes to Composer unchanged.
    assert compile_model_or_blocks({}, Wrapper(tiny_mpt())) == {}


def test_scope_blocks_compiles_each_block_with_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_mpt()
    calls: list[tuple[int, dict[str, Any]]] = []

    def fake_compile(self: torch.nn.Module, **kwargs: Any) -> None:
        calls.append((id(self), kwargs))

    monkeypatch.setattr(torch.nn.Module, "compile", fake_compile)
    result = compile_model_or_blocks({"scope": "blocks", "dynamic": False}, Wrapper(model))
    assert result is None  # Composer compiles nothing more
    assert calls == [(id(block), {"dynamic": False}) for block in model.transformer.blocks]


def test_bad_scope_and_non_mpt_models_fail_in_one_line() -> None:
    with pytest.raises(ConfigError, match="compile_config.scope is 'layers'; use model or blocks"):
        compile_model_or_blocks({"scope": "layers"}, Wrapper(tiny_mpt()))
    with pytest.raises(ConfigError, match="needs an MPT model"):
        compile_model_or_blocks({"scope": "blocks"}, Wrapper(torch.nn.Linear(2, 2)))
