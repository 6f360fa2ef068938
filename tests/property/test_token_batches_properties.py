"""Properties of the converters' sample cutting (``SampleCutter``) and text batching.

For random document lengths, ``concat_tokens`` lengths, separators and wrap settings: every
sample has exactly the concat length; with wrapping the samples, joined, are the stream of
``bos + doc + eos`` pieces minus only its final remainder (shorter than one sample); without it
each sample is the start of a run of whole pieces that begins at a document and reaches the
concat length with its last document; and the samples never depend on where the documents
were split into batches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.data import ConcatTokensDataset, TokenizeBatches
from llmfoundry.data.token_batches import SampleCutter, TokenIds, batch_texts

from .strategies import FAST, FEW

BOS_ID = 1
EOS_ID = 2


@st.composite
def documents(draw: st.DrawFn) -> list[np.ndarray]:
    """Documents of 0..12 tokens, each token id unique to its document and position."""
    lengths = draw(st.lists(st.integers(0, 12), max_size=12))
    return [100 * (i + 1) + np.arange(n, dtype=np.int32) for i, n in enumerate(lengths)]


def separator(count: int, token: int) -> np.ndarray:
    """``count`` copies of ``token`` (a separator of several tokens, or none)."""
    return np.full(count, token, dtype=np.int32)


def cut_all(cutter: SampleCutter, docs: list[np.ndarray], cuts: list[int]) -> list[list[int]]:
    """Every sample the cutter emits when the documents arrive in batches split at ``cuts``."""
    bounds = [0, *cuts, len(docs)]
    samples = []
    for start, end in itertools.pairwise(bounds):
        samples += [s.tolist() for s in cutter.cut(docs[start:end])]
    return samples


@FAST
@given(
    documents(),
    st.integers(1, 16),
    st.integers(0, 2),
    st.integers(0, 2),
    st.booleans(),
    st.data(),
)
def test_samples_have_the_concat_length_and_do_not_depend_on_batching(
    docs: list[np.ndarray], length: int, n_bos: int, n_eos: int, wrap: bool, data: st.DataObject
) -> None:
    bos, eos = separator(n_bos, BOS_ID), separator(n_eos, EOS_ID)
    whole = cut_all(SampleCutter(length, bos, eos, wrap), docs, [])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(docs)), max_size=4), label="cuts"))
    batched = cut_all(SampleCutter(length, bos, eos, wrap), docs, cuts)
    assert batched == whole
    assert all(len(sample) == length for sample in whole)
    pieces = [[*bos.tolist(), *doc.tolist(), *eos.tolist()] for doc in docs]
    stream = [t for piece in pieces for t in piece]
    if wrap:
        joined = [t for sample in whole for t in sample]
        assert joined == stream[: len(joined)]
        assert len(stream) - len(joined) < length  # only the final remainder is dropped
        return
    # Without wrapping: greedily gather whole pieces until they reach the length; that run's
    # first ``length`` tokens are a sample and the rest of the run is dropped.
    expected, run = [], []
    for piece in pieces:
        run += piece
        if len(run) >= length:
            expected.append(run[:length])
            run = []
    assert whole == expected


@FAST
@given(
    st.lists(st.text(max_size=6), max_size=20),
    st.integers(1, 12),
    st.integers(1, 5),
)
def test_text_batches_keep_order_and_end_at_the_first_limit_reached(
    texts: list[str], max_chars: int, max_documents: int
) -> None:
    batches = list(batch_texts(texts, max_chars=max_chars, max_documents=max_documents))
    assert [t for b in batches for t in b] == texts
    for index, batch in enumerate(batches):
        assert batch
        assert len(batch) <= max_documents
        # The limits are checked after each text: no earlier text reached them.
        assert sum(map(len, batch[:-1])) < max_chars
        if index < len(batches) - 1:
            assert sum(map(len, batch)) >= max_chars or len(batch) == max_documents


@FEW
@given(
    st.lists(st.text(alphabet="ab cd\nef(),", max_size=30), max_size=10),
    st.integers(1, 12),
    st.sampled_from(["", "<|endoftext|>"]),
    st.sampled_from(["", "<|endoftext|>", "<|pad|><|endoftext|>"]),
    st.booleans(),
    st.data(),
)
def test_dataset_samples_equal_cutting_each_document_tokenized_alone(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    length: int,
    bos_text: str,
    eos_text: str,
    no_wrap: bool,
    data: st.DataObject,
) -> None:
    """What the converters write: documents tokenized in batches split anywhere give the samples
    of each document tokenized on its own, wrapped in its separators and cut as above."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(texts)), max_size=3), label="cuts"))

    def rebatched(batches: Iterable[list[str]]) -> Iterator[list[TokenIds]]:
        flat = [text for batch in batches for text in batch]
        bounds = [0, *cuts, len(flat)]
        for start, end in itertools.pairwise(bounds):
            encoded = tokenizer(flat[start:end])["input_ids"] if end > start else []
            yield [np.asarray(ids, dtype=np.int32) for ids in encoded]

    def tokens_of(text: str) -> np.ndarray:
        return np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int32)

    def samples(tokenize_batches: TokenizeBatches | None = None) -> list[list[int]]:
        dataset = ConcatTokensDataset(
            texts, tokenizer, length, bos_text, eos_text, no_wrap, tokenize_batches
        )
        return [sample["tokens"].tolist() for sample in dataset]

    docs = [np.asarray(tokenizer(text)["input_ids"], dtype=np.int32) for text in texts]
    cutter = SampleCutter(length, tokens_of(bos_text), tokens_of(eos_text), not no_wrap)
    expected = cut_all(cutter, docs, [])
    assert samples() == expected
    assert samples(rebatched) == expected
