"""The hooks Composer's FSDP/FSDP2 and activation checkpointing use, meta init, compile, FLOPs."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from composer.distributed.activation_checkpointing import (
    apply_ac,
    generate_composer_model_check_fn,
)
from composer.distributed.fsdp2_utils import generate_composer_model_policy
from torch import nn

from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.models.mpt.attention import GroupedQueryAttention
from llmfoundry.models.mpt.blocks import MPTBlock
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import composer_mpt, tiny_config, tiny_model

from .mpt_helpers import VOCAB_SIZE, assert_close, random_ids

MODEL_KWARGS: dict[str, Any] = {
    "d_model": 32,
    "n_heads": 4,
    "n_layers": 3,
    "expansion_ratio": 2,
    "max_seq_len": 32,
    "vocab_size": VOCAB_SIZE,
    "attn_config": {"attn_impl": "torch", "alibi": True},
}


def _composer_model(**overrides: Any) -> ComposerMPTCausalLM:
    return composer_mpt(MODEL_KWARGS, **overrides)


def _mpt_of(composer_model: ComposerMPTCausalLM) -> MPTForCausalLM:
    """The ``MPTForCausalLM`` inside (Composer types ``.model`` as any HF or peft model)."""
    model = composer_model.model
    assert isinstance(model, MPTForCausalLM)
    return model


def test_composer_fsdp2_policy_shards_each_block() -> None:
    composer_model = _composer_model()
    policy = generate_composer_model_policy(composer_model)
    decide: Any = policy._lambda_fn
    wrapped = [m for m in composer_model.modules() if decide(m) is True]
    blocks = list(_mpt_of(composer_model).transformer.blocks)
    # The HF model (Composer's direct child) is the root unit; each block is its own unit.
    assert wrapped == [composer_model.model, *blocks]


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        (None, MPTBlock),
        ("grouped_query_attention", GroupedQueryAttention),
        (["MPTBlock"], MPTBlock),
    ],
)
def test_activation_checkpointing_targets(target: Any, kind: type[nn.Module]) -> None:
    composer_model = _composer_model()
    model = _mpt_of(composer_model)
    if target is not None:
        model.activation_checkpointing_target = target
    check = generate_composer_model_check_fn(composer_model)
    chosen = [m for m in composer_model.modules() if check(m)]
    assert chosen and all(isinstance(m, kind) for m in chosen)
    assert len(chosen) == len([m for m in model.modules() if isinstance(m, kind)])


def test_bad_activation_checkpointing_target_names_the_choices() -> None:
    model = tiny_model(tiny_config())
    with pytest.raises(ValueError, match=r"activation_checkpointing_target='mlp'.*mptblock"):
        model.activation_checkpointing_target = ["mlp"]


def _checkpointed(target: Any, n_layers: int = 6) -> list[tuple[int, str]]:
    """(block index, module class) of every module the target checkpoints."""
    composer_model = _composer_model(n_layers=n_layers, activation_checkpointing_target=target)
    model = _mpt_of(composer_model)
    check = generate_composer_model_check_fn(composer_model)
    return [
        (index, type(module).__name__)
        for index, block in enumerate(model.transformer.blocks)
        for module in block.modules()
        if check(module)
    ]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # A block checkpointed whole is not checkpointed again inside.
        (["mptblock", "grouped_query_attention"], [(i, "MPTBlock") for i in range(6)]),
        ({"mptblock": 2}, [(0, "MPTBlock"), (1, "MPTBlock")]),
        ({"mptblock": -1}, [(i, "MPTBlock") for i in range(6)]),
        ({"mptblock": "first-1,last-2"}, [(0, "MPTBlock"), (4, "MPTBlock"), (5, "MPTBlock")]),
        # middle-m starts at (n_layers - 1) // 2 - m // 2, as in LLM Foundry.
        ({"mptblock": ["middle-2"]}, [(1, "MPTBlock"), (2, "MPTBlock")]),
        (
            {"grouped_query_attention": "range-1-3", "mptmlp": [0, 5]},
            [
                (0, "MPTMLP"),
                (1, "GroupedQueryAttention"),
                (2, "GroupedQueryAttention"),
                (5, "MPTMLP"),
            ],
        ),
    ],
)
def test_activation_checkpointing_target_selects_blocks(
    target: Any, expected: list[tuple[int, str]]
) -> None:
    assert _checkpointed(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"mptblock": "first-2", "mptmlp": [1]}, "assigns block 1 to both mptblock and mptmlp"),
        ({"mptblock": "top-2"}, "'top-2' is not one of first-n, last-k, middle-m, range-i-j"),
        ({"mptblock": [9]}, "names block 9; the model has blocks 0..5"),
        ({"attention": 1}, "model.activation_checkpointing_target='attention' is not a module"),
    ],
)
def test_bad_activation_checkpointing_target_is_a_config_error(target: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _checkpointed(target)


def test_checkpointed_blocks_give_the_same_gradients() -> None:
    """Composer's activation checkpointing, applied through our hook, changes no gradient."""
    reference = _composer_model()
    checkpointed = _composer_model()
    checkpointed.load_state_dict(reference.state_dict())
    apply_ac(checkpointed, True, False, generate_composer_model_check_fn(checkpointed))
    names = [n for n, _ in checkpointed.named_modules()]
    assert any("checkpoint_wrapped_module" in n for n in names), "blocks were wrapped"
    ids = random_ids(2, 16)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    for model in (reference, checkpointed):
        model.train()
        model.loss(model(batch), batch).backward()
    ref_grads = {
        n.replace("._checkpoint_wrapped_module", ""): p.grad
        for n, p in reference.named_parameters()
    }
    for name, param in checkpointed.named_parameters():
        clean = name.replace("._checkpoint_wrapped_module", "")
        expected = ref_grads[clean]
        assert param.grad is not None and expected is not None
        assert_close(param.grad, expected, clean)


@pytest.mark.parametrize("init_name", ["kaiming_normal_", "small_init_"])
def test_param_init_fn_materializes_meta_weights(init_name: str) -> None:
    """What Composer's FSDP meta init does: ``to_empty`` each module, then our param_init_fn."""
    config = tiny_config({"alibi": True}, n_layers=4, d_model=64, init_config={"name": init_name})
    with torch.device("meta"):
        model = MPTForCausalLM(config)
    for module in model.modules():
        module.to_empty(device="cpu", recurse=False)
        model.param_init_fn(module)
    params = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in params.values())
    assert torch.equal(params["transformer.norm_f.weight"], torch.ones(64))
    assert torch.equal(params["transformer.blocks.0.attn.Wqkv.bias"], torch.zeros(3 * 64))
    # Residual projections are divided by sqrt(2 * n_layers) relative to their siblings.
    out_std = params["transformer.blocks.0.attn.out_proj.weight"].std().item()
    up_std = params["transformer.blocks.0.ffn.up_proj.weight"].std().item()
    if init_name == "kaiming_normal_":
        expected_out = math.sqrt(2 / 64) / math.sqrt(8)  # relu gain, fan_in 64, / sqrt(2 * 4)
        expected_up = math.sqrt(2 / 64)
    else:
        expected_out = math.sqrt(2 / (5 * 64)) / math.sqrt(8)
        expected_up = math.sqrt(2 / (5 * 64))
    assert out_std == pytest.approx(expected_out, rel=0.1)
    assert up_std == pytest.approx(expected_up, rel=0.1)


def test_compile_blocks_keeps_the_function() -> None:
    model = tiny_model(tiny_config({"alibi": True}))
    ids = random_ids(2, 12)
    with torch.no_grad():
        expected = model(ids).logits
        model.compile_blocks(backend="eager")
        actual = model(ids).logits
    assert all(
        getattr(b, "_compiled_call_impl", None) is not None for b in model.transformer.blocks
    )
    assert_close(actual, expected)


def test_flops_per_batch_follows_the_published_formula() -> None:
    composer_model = _composer_model()
    model = _mpt_of(composer_model)
    batch_size, seq_len = 3, 16
    batch = {"input_ids": torch.zeros(batch_size, seq_len, dtype=torch.long)}
    params = sum(p.numel() for p in model.parameters())
    attention = MODEL_KWARGS["n_layers"] * 2 * 2 * MODEL_KWARGS["d_model"] * seq_len**2
    expected = 3 * (2 * params * seq_len + attention) * batch_size
    assert composer_model.flops_per_batch(batch) == expected
    embedding = VOCAB_SIZE * MODEL_KWARGS["d_model"]
    assert model.num_parameters_without_embeddings() == params - embedding
