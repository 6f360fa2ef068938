"""Properties of the pretraining (``text``) collator for samples cut from random documents.

Samples are windows of a stream of documents joined by an EOS after each (or a BOS before
each), as the converters write them. The batch holds every sample token once, right-padded to
the longest sample; labels are the input ids (unshifted) and -100 on padding; ``sequence_id``
gives the tokens of one document one id, a later document a larger one, with the separator
belonging to the document it ends (EOS) or starts (BOS).
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from llmfoundry.data.text_collator import (
    CausalLMCollator,
    ConcatenatedSequenceCollatorWrapper,
    count_tokens_in_batch,
)

from .strategies import FAST, IGNORE, tokens

PAD = 0
SEPARATOR = 1


@st.composite
def windows(draw: st.DrawFn) -> tuple[list[list[int]], list[list[int]], bool]:
    """``(samples, document index of each sample token, separator_is_bos)``."""
    docs = draw(st.lists(tokens, min_size=1, max_size=6))
    is_bos = draw(st.booleans())
    stream: list[int] = []
    owner: list[int] = []
    for index, doc in enumerate(docs):
        piece = [SEPARATOR, *doc] if is_bos else [*doc, SEPARATOR]
        stream += piece
        owner += [index] * len(piece)
    samples, owners = [], []
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(stream) - 1))
        end = draw(st.integers(start + 1, len(stream)))
        samples.append(stream[start:end])
        owners.append(owner[start:end])
    return samples, owners, is_bos


@FAST
@given(windows(), st.booleans())
def test_batch_holds_each_sample_right_padded_with_document_ids(
    drawn: tuple[list[list[int]], list[list[int]], bool], wrapped: bool
) -> None:
    samples, owners, is_bos = drawn
    ids = {"bos_token_id": SEPARATOR} if is_bos else {"eos_token_id": SEPARATOR}
    tensors = [torch.tensor(s) for s in samples]
    if wrapped:
        collate = ConcatenatedSequenceCollatorWrapper(CausalLMCollator(PAD), **ids)
    else:
        collate = CausalLMCollator(PAD, **ids)
    batch = collate(tensors)
    width = max(len(s) for s in samples)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "sequence_id"}
    for key in batch:
        assert batch[key].shape == (len(samples), width)
    for row, (sample, owner) in enumerate(zip(samples, owners, strict=True)):
        n = len(sample)
        assert batch["input_ids"][row].tolist() == sample + [PAD] * (width - n)
        assert batch["labels"][row].tolist() == sample + [IGNORE] * (width - n)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        seq = batch["sequence_id"][row, :n].tolist()
        # Same document <=> same id, and ids grow with the document (relative to the first).
        offset = seq[0] - owner[0]
        assert seq == [o + offset for o in owner]
    counts = count_tokens_in_batch(batch)
    assert counts["total"] == sum(len(s) for s in samples)
    assert counts["loss_generating"] == sum(len(s) - 1 for s in samples)
