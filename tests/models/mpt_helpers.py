"""Tiny MPT configs, models and batches shared by the model tests."""

from __future__ import annotations

from typing import Any

import torch

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

VOCAB_SIZE = 128
PAD_ID = 0


def tiny_config(attn_config: dict[str, Any] | None = None, **overrides: Any) -> MPTConfig:
    """A 2-layer, d_model 32 MPT config; ``overrides`` replace any field."""
    fields: dict[str, Any] = {
        "d_model": 32,
        "n_heads": 4,
        "n_layers": 2,
        "expansion_ratio": 2,
        "max_seq_len": 64,
        "vocab_size": VOCAB_SIZE,
        "attn_config": {"attn_impl": "torch", **(attn_config or {})},
    }
    fields.update(overrides)
    return MPTConfig(**fields)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Move every parameter away from its init (norm weights off 1, biases off 0).

    Fresh norms are exactly 1/0, which would hide a bug that drops or misplaces a norm's weight
    or bias; larger weights also make greedy generation less repetitive.
    """
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.add_(torch.randn(param.shape, generator=generator) * scale)
    return model


def tiny_model(config: MPTConfig, seed: int = 0) -> MPTForCausalLM:
    """An eval-mode ``MPTForCausalLM`` with seeded, randomized weights."""
    torch.manual_seed(seed)
    model = MPTForCausalLM(config).eval()
    randomize(model, seed)
    return model


def clone_with(model: MPTForCausalLM, config: MPTConfig) -> MPTForCausalLM:
    """A model built from ``config`` carrying ``model``'s weights (e.g. another attn_impl)."""
    other = MPTForCausalLM(config).eval()
    other.load_state_dict(model.state_dict())
    return other


def random_ids(batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """Token ids that never use the pad id."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(PAD_ID + 1, VOCAB_SIZE, (batch, seq_len), generator=generator)


def left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D id tensors into ``(input_ids, attention_mask)``."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return ids, mask


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    msg: str | None = None,
    *,
    atol: float = 2e-5,
    rtol: float = 1e-5,
) -> None:
    """fp32 closeness for logits of the randomized tiny models (which reach ~10).

    Reordered fp32 sums (SDPA vs matmul, cached vs full) move them by ~1e-6.
    """
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=msg)


def generate(model: Any, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``model.generate(input_ids, **kwargs)``.

    ``GenerationMixin.generate`` types ``self`` as a protocol that no concrete model (not even
    ``transformers``' own) satisfies for pyright, hence the ``Any``.
    """
    return model.generate(input_ids, **kwargs)


def assert_same_grads(
    reference: torch.nn.Module, other: torch.nn.Module, *, atol: float = 1e-5, rtol: float = 1e-4
) -> None:
    """Every parameter of ``other`` got the gradient its namesake in ``reference`` got."""
    for (name, p_ref), (_, p_other) in zip(
        reference.named_parameters(), other.named_parameters(), strict=True
    ):
        assert p_ref.grad is not None and p_other.grad is not None, name
        assert_close(p_other.grad, p_ref.grad, name, atol=atol, rtol=rtol)
