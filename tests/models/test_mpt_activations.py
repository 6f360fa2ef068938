"""``ffn_config.ffn_act_fn`` takes what LLM Foundry 0.22 takes: ``quick_gelu`` or any
``torch.nn.functional`` function with keyword options, and the MLP applies exactly that."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.models.mpt.activations import build_activation
from tests.fixtures import tiny_config, tiny_model

POINTS = torch.tensor([-2.0, -1.0, 0.0, 0.5, 3.0])


def _expected(name: str, x: float) -> float:
    """The activations, written out by hand from their definitions."""
    if name == "quick_gelu":
        return x / (1 + math.exp(-1.702 * x))
    if name == "leaky_relu":  # negative_slope 0.2
        return x if x >= 0 else 0.2 * x
    if name == "elu":  # alpha 0.5
        return x if x > 0 else 0.5 * (math.exp(x) - 1)
    if name == "gelu_tanh":
        return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    raise AssertionError(name)


SPECS: dict[str, dict[str, Any]] = {
    "quick_gelu": {"name": "quick_gelu"},
    "leaky_relu": {"name": "leaky_relu", "negative_slope": 0.2},
    "elu": {"name": "elu", "alpha": 0.5},
    "gelu_tanh": {"name": "gelu", "approximate": "tanh"},
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_the_mlp_applies_the_named_activation_with_its_options(case: str, tmp_path: Path) -> None:
    config = tiny_config(ffn_config={"ffn_type": "mptmlp", "ffn_act_fn": SPECS[case]})
    model = tiny_model(config)
    expected = torch.tensor([_expected(case, float(x)) for x in POINTS])
    act = model.get_submodule("transformer.blocks.0.ffn.act")
    torch.testing.assert_close(act(POINTS), expected)
    # The choice is part of the saved config: a reloaded model computes the same logits.
    model.save_pretrained(tmp_path)
    reloaded = MPTForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_a_name_alone_and_no_activation_mean_what_they_meant_before() -> None:
    exact_gelu = [0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in POINTS.tolist()]
    torch.testing.assert_close(build_activation(None)(POINTS), torch.tensor(exact_gelu))
    silu = [x / (1 + math.exp(-x)) for x in POINTS.tolist()]
    torch.testing.assert_close(build_activation("silu")(POINTS), torch.tensor(silu))
    torch.testing.assert_close(build_activation({"name": "relu"})(POINTS), POINTS.clamp(min=0))


def test_init_nonlinearity_is_checked_only_for_kaiming_inits() -> None:
    # LLM Foundry never reads init_nonlinearity outside kaiming_*, so it is not checked there.
    config = tiny_config(init_config={"name": "small_init_", "init_nonlinearity": "gelu"})
    assert config.init_config["init_nonlinearity"] == "gelu"
