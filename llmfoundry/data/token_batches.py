"""Documents tokenized a batch at a time and cut into fixed-length samples with numpy.

:class:`~llmfoundry.data.data.ConcatTokens` groups its documents into batches
(:func:`batch_texts`), tokenizes each batch with one call of the tokenizer (:func:`tokenize_batch`;
a fast tokenizer encodes the whole batch in Rust) and cuts the token stream into samples
(:class:`SampleCutter`): the separators are joined to the documents and the samples sliced off
with numpy, so no Python code runs per token. The batches are independent of how they are
tokenized (here or in worker processes), so the samples are too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.byte_level_bpe import ByteLevelFastPath, byte_level_fast_path

# A batch is cut when it holds this many characters or documents: large enough that the
# per-call overhead vanishes, small enough that a few batches in flight take little memory.
BATCH_CHARS = 1 << 20
BATCH_DOCUMENTS = 2048

TokenIds = NDArray[np.int32]
# Encodes a batch of texts: one int32 array of ids per text.
BatchEncoder = Callable[[list[str]], list[TokenIds]]


def batch_texts(
    texts: Iterable[str], max_chars: int | None = None, max_documents: int | None = None
) -> Iterator[list[str]]:
    """Group ``texts`` into lists of at most ``max_documents`` texts and about ``max_chars``
    characters (a batch ends with the text that reaches ``max_chars``); by default
    :data:`BATCH_DOCUMENTS` and :data:`BATCH_CHARS`.

    When reading ``texts`` fails, the batch read so far is yielded before the error is raised,
    so that the documents before a bad row are processed as they would be one at a time.

    Yields:
        The batches, in order; none is empty.
    """
    max_chars = BATCH_CHARS if max_chars is None else max_chars
    max_documents = BATCH_DOCUMENTS if max_documents is None else max_documents
    batch: list[str] = []
    size = 0
    iterator = iter(texts)
    while True:
        try:
            text = next(iterator)
        except StopIteration:
            break
        except Exception:
            if batch:
                yield batch
            raise
        batch.append(text)
        size += len(text)
        if size >= max_chars or len(batch) >= max_documents:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def tokenize_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[TokenIds]:
    """The token ids of each text, as the tokenizer makes them by default (its own special
    tokens included), with one call for the whole batch.

    Returns:
        One int32 array per text.
    """
    backend = _plain_backend(tokenizer)
    if backend is not None:
        encodings = backend.encode_batch_fast(texts, add_special_tokens=True)
        return [np.asarray(encoding.ids, dtype=np.int32) for encoding in encodings]
    # verbose=False: documents are longer than model_max_length on purpose.
    encoded = tokenizer(
        texts,
        truncation=False,
        padding=False,
        verbose=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["input_ids"]
    return [np.asarray(ids, dtype=np.int32) for ids in encoded]


def batch_encoder(tokenizer: PreTrainedTokenizerBase) -> BatchEncoder:
    """:func:`tokenize_batch` with ``tokenizer``, made once: through the byte-level BPE fast path
    when the tokenizer takes it (see :func:`_fast_path`), the same ids about three times faster.
    Build it once per conversion, after the tokenizer is set up."""
    fast = _fast_path(tokenizer)
    if fast is None:
        return partial(tokenize_batch, tokenizer)
    encode = fast.encode_batch
    return lambda texts: [np.asarray(ids, dtype=np.int32) for ids in encode(texts)]


def fast_text_encoder(tokenizer: PreTrainedTokenizerBase) -> Callable[[str], list[int]] | None:
    """``tokenizer(text)['input_ids']`` for one text at a time through the byte-level BPE fast
    path, or None when ``tokenizer`` does not take it (or encodes targets differently)."""
    # Seq2seq tokenizers with a target vocabulary switch to it for ``text_target``.
    if hasattr(tokenizer, "_switch_to_target_mode") or hasattr(tokenizer, "_switch_to_input_mode"):
        return None
    fast = _fast_path(tokenizer)
    if fast is None:
        return None
    encode = fast.encode_batch
    return lambda text: encode([text])[0]


def _fast_path(tokenizer: PreTrainedTokenizerBase) -> ByteLevelFastPath | None:
    """:class:`~llmfoundry.data.byte_level_bpe.ByteLevelFastPath` for ``tokenizer``'s Rust
    tokenizer, when calling that directly is what the wrapper does and it passes the checks."""
    backend = _plain_backend(tokenizer)
    return byte_level_fast_path(backend) if backend is not None else None


def _plain_backend(tokenizer: PreTrainedTokenizerBase) -> Tokenizer | None:
    """A fast tokenizer's Rust tokenizer when calling it directly gives what ``tokenizer(...)``
    does with no truncation or padding (neither is set on it, special tokens are handled as the
    wrapper says): then ``encode_batch_fast`` makes the same ids without computing offsets, about
    a third less CPU. None for a slow tokenizer, or until the wrapper's call has reset them."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if tokenizer.is_fast else None
    if not isinstance(backend, Tokenizer):
        return None
    if backend.truncation is not None or backend.padding is not None:
        return None
    if backend.encode_special_tokens != getattr(tokenizer, "split_special_tokens", False):
        return None
    return backend


class SampleCutter:
    """Joins tokenized documents with their separators and cuts samples of ``length`` tokens.

    Each document becomes ``bos + ids + eos``. With ``wrap`` the documents form one stream and
    every ``length`` tokens are a sample (what is left over starts the next one); without it,
    once a document has filled a sample the sample is cut and the rest of the buffer dropped.

    Args:
        length: tokens per sample.
        bos: the separator ids put before each document (may be empty).
        eos: the separator ids put after each document (may be empty).
        wrap: carry a document's tokens beyond a full sample over into the next one.
    """

    def __init__(self, length: int, bos: TokenIds, eos: TokenIds, wrap: bool) -> None:
        self.length = length
        self.bos = bos
        self.eos = eos
        self.wrap = wrap
        self.rest: list[TokenIds] = []  # the tokens not yet in a sample
        self.rest_size = 0

    def cut(self, documents: list[TokenIds]) -> Iterator[TokenIds]:
        """The samples completed by the next tokenized ``documents``, in order.

        Yields:
            Arrays of ``length`` tokens (views of a buffer that is never changed afterwards).
        """
        if self.wrap:
            yield from self._cut_stream(documents)
        else:
            yield from self._cut_documents(documents)

    def _cut_stream(self, documents: list[TokenIds]) -> Iterator[TokenIds]:
        pieces = list(self.rest)
        for ids in documents:
            pieces += (self.bos, ids, self.eos)
        stream = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int32)
        full = len(stream) // self.length * self.length
        self.rest = [stream[full:].copy()]
        self.rest_size = len(stream) - full
        yield from stream[:full].reshape(-1, self.length)

    def _cut_documents(self, documents: list[TokenIds]) -> Iterator[TokenIds]:
        for ids in documents:
            self.rest += (self.bos, ids, self.eos)
            self.rest_size += len(self.bos) + len(ids) + len(self.eos)
            if self.rest_size >= self.length:
                yield np.concatenate(self.rest)[: self.length]
                self.rest, self.rest_size = [], 0
