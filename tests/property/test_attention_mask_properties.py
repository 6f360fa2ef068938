"""No attention across packed documents, for random document splits (CPU, float64).

The mask built from ``sequence_id`` (``llmfoundry/models/mpt/masks.py``) lets query ``q`` see key
``k`` exactly when ``k`` is not in its future, is in its window, is in its document and is not
padding (a pad query sees itself only). Each attention implementation that takes sequence ids
gives a packed row the output each document gets on its own, and so does the whole model.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.models.mpt.attention_impls import (
    AttentionInputs,
    alibi_bias,
    alibi_slopes,
    flex_attention_call,
    sdpa_attention,
    torch_attention,
)
from llmfoundry.models.mpt.masks import build_attention_inputs

from .strategies import FAST

HEADS = 2
HEAD_DIM = 4
CPU = torch.device("cpu")


@st.composite
def packed_rows(
    draw: st.DrawFn, max_len: int = 14, max_batch: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sequence_id, attention_mask)`` of right-padded packed rows: documents 0, 1, ... then
    -1 / 0 on padding (as the packing collator makes them)."""
    batch = draw(st.integers(1, max_batch))
    length = draw(st.integers(1, max_len))
    sequence_id = torch.full((batch, length), -1, dtype=torch.int64)
    for row in range(batch):
        real = draw(st.integers(1, length))
        starts = draw(st.sets(st.integers(1, real - 1), max_size=4)) if real > 1 else set()
        sequence_id[row, :real] = torch.cumsum(
            torch.tensor([i in starts for i in range(real)], dtype=torch.int64), 0
        )
    return sequence_id, (sequence_id != -1).long()


def config(attn_impl: str = "torch", **attn: object) -> MPTConfig:
    """A tiny MPT config (2 layers, d_model 8) that uses sequence ids."""
    return MPTConfig(
        d_model=HEADS * HEAD_DIM,
        n_heads=HEADS,
        n_layers=2,
        expansion_ratio=2,
        max_seq_len=32,
        vocab_size=50,
        attn_config={"attn_impl": attn_impl, "attn_uses_sequence_id": True, **attn},
    )


def documents(sequence_id: torch.Tensor) -> list[tuple[int, int]]:
    """The ``(start, end)`` span of each document of one row."""
    spans = []
    for doc in range(int(sequence_id.max()) + 1):
        where = (sequence_id == doc).nonzero().flatten()
        spans.append((int(where[0]), int(where[-1]) + 1))
    return spans


@FAST
@given(packed_rows(), st.integers(0, 6), st.sampled_from([None, 1, 3]), st.booleans())
def test_mask_allows_exactly_earlier_tokens_of_the_same_document(
    rows: tuple[torch.Tensor, torch.Tensor], past_len: int, window: int | None, alibi: bool
) -> None:
    sequence_id, attention_mask = rows
    key_len = sequence_id.shape[1]
    past_len = min(past_len, key_len - 1)
    seq_len = key_len - past_len
    inputs = build_attention_inputs(
        config(alibi=alibi), attention_mask, sequence_id, past_len, seq_len, CPU, window
    )
    assert inputs.allowed is not None
    allowed = inputs.allowed.expand(len(sequence_id), 1, seq_len, key_len)[:, 0]
    q = torch.arange(past_len, key_len).view(-1, 1)
    k = torch.arange(key_len).view(1, -1)
    expected = (k <= q) & ((q - k <= window) if window is not None else True)
    same_doc = sequence_id[:, past_len:, None] == sequence_id[:, None, :]
    key_real = attention_mask.bool()[:, None, :]
    expected = expected & same_doc & key_real | (k == q)
    assert torch.equal(allowed, expected)
    # What a user relies on, stated directly: a real token never sees another document.
    real_pairs = attention_mask.bool()[:, past_len:, None] & key_real
    assert not (allowed & real_pairs & ~same_doc).any()
    assert not (allowed & (k > q)).any()


def _attend(
    impl: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, inputs: AttentionInputs
) -> torch.Tensor:
    """One attention implementation's output, ``(b, h, s, d)``."""
    if impl == "flex":
        return flex_attention_call(q, k, v, inputs, 0.5, None)
    function = torch_attention if impl == "torch" else sdpa_attention
    return function(q, k, v, inputs.bias, inputs.allowed, 0.5, 0.0)


@torch.no_grad()
def check_attention_against_documents_alone(
    rows: tuple[torch.Tensor, torch.Tensor], impl: str, alibi: bool, window: int | None, seed: int
) -> None:
    """Attention over packed rows equals attention over each document on its own."""
    sequence_id, attention_mask = rows
    batch, length = sequence_id.shape
    generator = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(
        3, batch, HEADS, length, HEAD_DIM, generator=generator, dtype=torch.float64
    )
    cfg = config(impl, alibi=alibi)
    inputs = build_attention_inputs(cfg, attention_mask, sequence_id, 0, length, CPU, window)
    packed = _attend(impl, q, k, v, inputs)
    slopes = alibi_slopes(HEADS) if alibi else None
    for row in range(batch):
        for start, end in documents(sequence_id[row]):
            alone = AttentionInputs(
                bias=alibi_bias(slopes, end - start) if slopes is not None else None,
                alibi_slopes=slopes,
            )
            if impl == "flex" or window is not None:
                alone = build_attention_inputs(cfg, None, None, 0, end - start, CPU, window)
            part = slice(start, end)
            expected = _attend(
                impl,
                q[row : row + 1, :, part],
                k[row : row + 1, :, part],
                v[row : row + 1, :, part],
                alone,
            )
            torch.testing.assert_close(
                packed[row : row + 1, :, part], expected, rtol=1e-6, atol=1e-7
            )
        pad = attention_mask[row] == 0  # a pad query sees only itself
        torch.testing.assert_close(packed[row][:, pad], v[row][:, pad], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", ["torch", "sdpa"])
@settings(max_examples=40, deadline=None)
@given(
    rows=packed_rows(),
    alibi=st.booleans(),
    window=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 99),
)
def test_attention_of_a_packed_row_equals_each_document_alone(
    rows: tuple[torch.Tensor, torch.Tensor], impl: str, alibi: bool, window: int | None, seed: int
) -> None:
    check_attention_against_documents_alone(rows, impl, alibi, window, seed)


# FlexAttention traces its eager CPU kernel again for each new length: fewer, shorter examples.
@settings(max_examples=8, deadline=None)
@given(
    rows=packed_rows(max_len=8, max_batch=2),
    alibi=st.booleans(),
    window=st.sampled_from([None, 2]),
    seed=st.integers(0, 99),
)
def test_flex_attention_of_a_packed_row_equals_each_document_alone(
    rows: tuple[torch.Tensor, torch.Tensor], alibi: bool, window: int | None, seed: int
) -> None:
    check_attention_against_documents_alone(rows, "flex", alibi, window, seed)


@functools.cache
def tiny_model(impl: str, rope: bool) -> MPTForCausalLM:
    """A float64 eval-mode model, built once per setting."""
    torch.manual_seed(0)
    position = {"rope": True} if rope else {"alibi": True}
    return MPTForCausalLM(config(impl, **position)).double().eval()


@pytest.mark.parametrize(("impl", "examples"), [("torch", 20), ("sdpa", 20), ("flex", 4)])
@torch.no_grad()
def test_model_logits_of_a_packed_row_equal_each_document_alone(impl: str, examples: int) -> None:
    """The whole model (RoPE or ALiBi positions, both restarting per document)."""

    @settings(max_examples=examples, deadline=None)
    @given(rows=packed_rows(max_len=12, max_batch=1), rope=st.booleans(), seed=st.integers(0, 99))
    def check(rows: tuple[torch.Tensor, torch.Tensor], rope: bool, seed: int) -> None:
        check_model_against_documents_alone(rows, impl, rope, seed)

    check()


def check_model_against_documents_alone(
    rows: tuple[torch.Tensor, torch.Tensor], impl: str, rope: bool, seed: int
) -> None:
    """The logits of a packed row equal those of each of its documents run alone."""
    sequence_id, attention_mask = rows
    model = tiny_model(impl, rope)
    ids = torch.randint(2, 50, sequence_id.shape, generator=torch.Generator().manual_seed(seed))
    packed = model(ids, attention_mask=attention_mask, sequence_id=sequence_id).logits
    for start, end in documents(sequence_id[0]):
        alone_ids = ids[:, start:end]
        alone = model(alone_ids, sequence_id=torch.zeros_like(alone_ids)).logits
        torch.testing.assert_close(packed[:, start:end], alone, rtol=1e-6, atol=1e-7)
