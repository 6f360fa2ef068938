"""Properties of the finetuning collator a training run relies on, for random examples.

Every prompt/response token appears once, in order, in its row (cut at ``max_seq_len`` when
longer: the documented truncation keeps the first tokens); labels equal the input ids
(unshifted) exactly where the target settings say, and -100 elsewhere; rows are right-padded
with the pad id, -100 labels and a zero attention mask; trimming removes padding only.
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import given
from hypothesis import strategies as st

from llmfoundry.data.finetuning.collator import Seq2SeqFinetuningCollator, count_tokens_in_batch

from .strategies import (
    FAST,
    IGNORE,
    example,
    example_tokens,
    expected_labels,
    target_prompts,
    target_responses,
)

PAD = 0
EOS = 1


def collate_settings() -> st.SearchStrategy[dict[str, Any]]:
    """Collator keyword arguments: targets, length, EOS (None, or equal to the pad id or not)."""
    return st.fixed_dictionaries(
        {
            "max_seq_len": st.integers(1, 24),
            "target_prompts": target_prompts,
            "target_responses": target_responses,
            "eos_token_id": st.sampled_from([None, EOS, PAD]),
            "pad_to_longest": st.booleans(),
        }
    )


def _expected_rows(examples: list[dict[str, Any]], kwargs: dict[str, Any]) -> list[tuple]:
    rows = []
    for ex in examples:
        toks = example_tokens(ex["turns"], kwargs["eos_token_id"])
        ids, labels = expected_labels(
            toks,
            len(ex["turns"]),
            kwargs["target_prompts"],
            kwargs["target_responses"],
            kwargs["max_seq_len"],
        )
        rows.append((ids, labels))
    return rows


@FAST
@given(st.lists(example, min_size=1, max_size=4), collate_settings())
def test_rows_hold_each_example_once_with_documented_labels_and_right_padding(
    examples: list[dict[str, Any]], kwargs: dict[str, Any]
) -> None:
    batch = Seq2SeqFinetuningCollator(pad_token_id=PAD, **kwargs)(examples)
    expected = _expected_rows(examples, kwargs)
    longest = max(len(ids) for ids, _ in expected)
    width = longest if kwargs["pad_to_longest"] else kwargs["max_seq_len"]
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for key in batch:
        assert batch[key].shape == (len(examples), width)
        assert batch[key].dtype == torch.int64
    for row, (ids, labels) in enumerate(expected):
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["input_ids"][row, n:].tolist() == [PAD] * (width - n)
        assert batch["labels"][row, n:].tolist() == [IGNORE] * (width - n)
        if any(label != IGNORE for label in labels):
            assert batch["labels"][row, :n].tolist() == labels
        else:  # no target left within max_seq_len: the row adds nothing to the loss
            assert batch["labels"][row].tolist() == [IGNORE] * width


@FAST
@given(st.lists(example, min_size=1, max_size=4), collate_settings())
def test_scored_labels_are_the_input_ids_at_their_own_position(
    examples: list[dict[str, Any]], kwargs: dict[str, Any]
) -> None:
    batch = Seq2SeqFinetuningCollator(pad_token_id=PAD, **kwargs)(examples)
    scored = batch["labels"] != IGNORE
    assert torch.equal(batch["labels"][scored], batch["input_ids"][scored])
    assert not scored[:, 0].any()  # the first position has nothing before it to predict from
    assert not (scored & (batch["attention_mask"] == 0)).any()
    counts = count_tokens_in_batch(batch)
    assert counts == {
        "total": int(batch["attention_mask"].sum()),
        "loss_generating": int(scored.sum()),
    }


@FAST
@given(
    st.lists(example, min_size=1, max_size=3),
    st.lists(example, min_size=1, max_size=3),
    collate_settings(),
)
def test_trimming_removes_only_padding_and_keeps_a_multiple_of_eight(
    first: list[dict[str, Any]], second: list[dict[str, Any]], kwargs: dict[str, Any]
) -> None:
    trimming = Seq2SeqFinetuningCollator(pad_token_id=PAD, allow_pad_trimming=True, **kwargs)
    plain = Seq2SeqFinetuningCollator(pad_token_id=PAD, **kwargs)
    full_first = plain(first)
    trimmed_first = trimming(first)
    for key in full_first:  # the first batch keeps its width
        assert torch.equal(trimmed_first[key], full_first[key])
    full, trimmed = plain(second), trimming(second)
    keep = trimmed["input_ids"].shape[1]
    longest = int(full["attention_mask"].sum(dim=1).max())
    assert keep == min(full["input_ids"].shape[1], -(-longest // 8) * 8)
    for key in full:
        assert torch.equal(trimmed[key], full[key][:, :keep])
        assert trimmed[key].is_contiguous()
    assert int(trimmed["attention_mask"].sum()) == int(full["attention_mask"].sum())
