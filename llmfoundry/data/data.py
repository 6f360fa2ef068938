"""The converters' core: turn documents into samples and write them as MDS.

Pretraining data is a stream of token ids cut into samples of exactly ``max_length`` tokens:
:class:`ConcatTokens` tokenizes each document, puts the BOS/EOS separator tokens around it,
appends it to a buffer and cuts full samples off the front. :class:`NoConcat` passes the
documents through as text. :func:`write_mds` writes either kind of sample to an MDS folder.

This module imports no torch, so that a converter starts fast; LLM Foundry's
``ConcatTokensDataset`` and ``NoConcatDataset`` (the same streams as torch ``IterableDataset``s,
in :mod:`llmfoundry.data.torch_datasets`) are importable from here too, loaded on first use.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.mds_writer import MiniMDSWriter, supports, zstd_level
from llmfoundry.data.token_batches import SampleCutter, TokenIds, batch_encoder, batch_texts
from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.exceptions import ConfigError, DatasetError, did_you_mean
from llmfoundry.utils.file_utils import check_output_folder, format_size

logger = logging.getLogger(__name__)

TOKENS_COLUMNS = {"tokens": "ndarray:int32"}
TEXT_COLUMNS = {"text": "str"}

Document = str | Mapping[str, Any]


class MDSSampleWriter(Protocol):
    """What :func:`write_mds` needs of an MDS writer."""

    def write(self, sample: dict[str, Any]) -> None:
        """Add one sample."""
        ...


TokenizeBatches = Callable[[Iterable[list[str]]], Iterator[list[TokenIds]]]


def iter_document_texts(documents: Iterable[Document]) -> Iterator[str]:
    """Yield the text of each document.

    Args:
        documents: strings, or rows (such as a Hugging Face dataset's) with a ``text`` field.

    Yields:
        Each document's text.

    Raises:
        DatasetError: if a row has no string ``text`` field (names the row's index).
    """
    for index, document in enumerate(documents):
        if isinstance(document, str):
            yield document
            continue
        text = document.get("text")
        if not isinstance(text, str):
            raise DatasetError(
                f"document {index} has no string 'text' field (keys: {', '.join(map(str, document))}); "
                "every row needs its text in a 'text' field"
            )
        yield text


class NoConcat:
    """Documents as they are: yields ``{'text': str}`` for each one.

    Args:
        documents: strings, or rows with a ``text`` field (a Hugging Face dataset works).
    """

    def __init__(self, documents: Iterable[Document]) -> None:
        self.documents = documents

    def __iter__(self) -> Iterator[dict[str, str]]:
        for text in iter_document_texts(self.documents):
            yield {"text": text}


class ConcatTokens:
    """Tokenized documents, concatenated and cut into samples of exactly ``max_length`` tokens.

    Each document becomes ``bos tokens + tokenizer(document) + eos tokens``; the document is
    tokenized as the tokenizer does by default (a tokenizer that adds its own BOS, like Llama's,
    adds it here too), the separators without special tokens. The documents are tokenized in
    batches (:mod:`llmfoundry.data.token_batches`), the pieces appended to a buffer and full
    samples cut off its front. With wrapping (the default) what is left after the
    last full sample starts the next one; with ``no_wrap`` the buffer is emptied after a document
    has filled a sample, so the rest of that document is dropped. Short documents still share a
    sample. The final partial sample is dropped.

    Args:
        documents: strings, or rows with a ``text`` field (a Hugging Face dataset works).
        tokenizer: the tokenizer.
        max_length: tokens per sample.
        bos_text: text put before each document (e.g. ``<|endoftext|>``), or ``""``.
        eos_text: text put after each document, or ``""``.
        no_wrap: drop the rest of a document once it has filled a sample.
        tokenize_batches: turns batches of texts into their token ids, in order (for example
            in worker processes, see :mod:`llmfoundry.command_utils.data_prep.workers`); by
            default each batch is tokenized here with one call of the tokenizer. The samples
            are the same either way.

    Raises:
        ConfigError: if ``max_length`` is not a positive integer.

    Yields (when iterated):
        ``{'tokens': np.ndarray}`` of ``max_length`` int32 token ids.
    """

    def __init__(
        self,
        documents: Iterable[Document],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        bos_text: str = "",
        eos_text: str = "",
        no_wrap: bool = False,
        tokenize_batches: TokenizeBatches | None = None,
    ) -> None:
        check_value(max_length, PositiveInt, "concat_tokens")
        self.documents = documents
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.should_wrap = not no_wrap
        self.bos_tokens = separator_tokens(tokenizer, bos_text or "", "bos_text")
        self.eos_tokens = separator_tokens(tokenizer, eos_text or "", "eos_text")
        warn_about_separators(tokenizer, bos_text or "", eos_text or "")
        self.tokenize_batches: TokenizeBatches = tokenize_batches or self.tokenize_in_process

    def __iter__(self) -> Iterator[dict[str, NDArray[np.int32]]]:
        cutter = SampleCutter(self.max_length, self.bos_tokens, self.eos_tokens, self.should_wrap)
        batches = batch_texts(iter_document_texts(self.documents))
        for documents in self.tokenize_batches(batches):
            for sample in cutter.cut(documents):
                yield {"tokens": sample}

    def tokenize_in_process(self, batches: Iterable[list[str]]) -> Iterator[list[TokenIds]]:
        """The default ``tokenize_batches``: each batch tokenized here, in turn."""
        encode = batch_encoder(self.tokenizer)
        for batch in batches:
            yield encode(batch)


def separator_tokens(tokenizer: PreTrainedTokenizerBase, text: str, name: str) -> NDArray[np.int32]:
    """Token ids of a BOS/EOS separator text (no special tokens added by the tokenizer).

    Args:
        tokenizer: the tokenizer.
        text: the separator text, or ``""`` for none.
        name: the option that set it (``bos_text``), for the warning.

    Returns:
        The ids (empty for ``""``); a warning is logged when they are more than one token.
    """
    if not text:
        return np.empty(0, dtype=np.int32)
    ids = tokenizer(text, add_special_tokens=False, truncation=False, padding=False)["input_ids"]
    if len(ids) > 1:
        logger.warning(
            "%s %r is %d tokens, not one; each document will be wrapped in all of them "
            "(use the tokenizer's special token text, e.g. %r, for a single separator token)",
            name,
            text,
            len(ids),
            tokenizer.eos_token,
        )
    return np.asarray(ids, dtype=np.int32)


def warn_about_separators(tokenizer: PreTrainedTokenizerBase, bos_text: str, eos_text: str) -> None:
    """Warn when documents would run together, or when separators may be doubled.

    Args:
        tokenizer: the tokenizer.
        bos_text: the BOS separator text, or ``""``.
        eos_text: the EOS separator text, or ``""``.
    """
    adds_special_tokens = len(tokenizer("", verbose=False)["input_ids"]) > 0
    if not adds_special_tokens and not bos_text and not eos_text:
        eos = tokenizer.eos_token
        logger.warning(
            "the tokenizer adds no BOS/EOS token and bos_text/eos_text are empty: documents will be "
            "concatenated with no separator; pass %s",
            f"--eos_text {eos!r} (its EOS token)" if eos else "--eos_text with a separator text",
        )
    elif adds_special_tokens and (bos_text or eos_text):
        logger.warning(
            "the tokenizer adds special tokens of its own and bos_text/eos_text are set too: "
            "documents may get duplicated separators"
        )


SKIP_HINT = "fix the row, or pass --skip_bad_rows to skip such rows"


class BadRowError(DatasetError):
    """A row of input that cannot be converted (bad JSON, bad UTF-8, no string text field).

    The message is ``problem`` followed by what to do (:data:`SKIP_HINT`).

    Args:
        reason: a few words naming the kind of problem (``"invalid JSON"``), for the summary.
        problem: where the row is and what is wrong with it.
    """

    def __init__(self, reason: str, problem: str) -> None:
        super().__init__(f"{problem}; {SKIP_HINT}")
        self.reason = reason
        self.problem = problem

    def __reduce__(self) -> tuple[type[BadRowError], tuple[str, str]]:
        # Rebuilt from both arguments when sent from a worker process.
        return (type(self), (self.reason, self.problem))


MAX_SKIPPED_ROWS_LOGGED = 5


class RowStats:
    """Counts the input rows a conversion reads and the bad rows it drops.

    Bad rows are errors unless ``skip_bad_rows`` is set; then they are counted by reason and
    the first few are logged.

    Args:
        skip_bad_rows: count and skip bad rows instead of failing on the first one.
    """

    def __init__(self, skip_bad_rows: bool = False) -> None:
        self.skip_bad_rows = skip_bad_rows
        self.rows_read = 0
        self.dropped: Counter[str] = Counter()

    def bad_row(self, error: BadRowError) -> None:
        """Drop a bad row when skipping, else fail on it.

        Raises:
            BadRowError: ``error`` itself, unless bad rows are skipped.
        """
        if not self.skip_bad_rows:
            raise error
        self.dropped[error.reason] += 1
        skipped = sum(self.dropped.values())
        if skipped <= MAX_SKIPPED_ROWS_LOGGED:
            logger.warning("skipping a bad row: %s", error.problem)
        if skipped == MAX_SKIPPED_ROWS_LOGGED:
            logger.warning("further bad rows are skipped without a message (see the summary)")

    def add(self, rows_read: int, dropped: Mapping[str, int]) -> None:
        """Add counts taken elsewhere (e.g. in a worker process)."""
        self.rows_read += rows_read
        self.dropped.update(dropped)

    def take(self) -> tuple[int, dict[str, int]]:
        """The counts so far, which are then reset (to send them on in pieces)."""
        counts = (self.rows_read, dict(self.dropped))
        self.rows_read = 0
        self.dropped = Counter()
        return counts


@dataclass(frozen=True)
class MDSWriteSummary:
    """What a conversion read and wrote.

    Attributes:
        num_samples: samples written.
        num_tokens: tokens written (0 for text samples, which are not tokenized).
        out: the output folder.
        rows_read: input rows (documents) read, bad ones included.
        rows_dropped: bad rows skipped, by reason.
        bytes_on_disk: size of the output folder's files.
    """

    num_samples: int
    num_tokens: int
    out: str
    rows_read: int = 0
    rows_dropped: dict[str, int] = field(default_factory=dict)
    bytes_on_disk: int = 0

    def merged_with(self, other: MDSWriteSummary, out: str) -> MDSWriteSummary:
        """The summary of this write and ``other`` together, as written to ``out``."""
        dropped = Counter(self.rows_dropped)
        dropped.update(other.rows_dropped)
        return MDSWriteSummary(
            num_samples=self.num_samples + other.num_samples,
            num_tokens=self.num_tokens + other.num_tokens,
            out=out,
            rows_read=self.rows_read + other.rows_read,
            rows_dropped=dict(dropped),
            bytes_on_disk=self.bytes_on_disk + other.bytes_on_disk,
        )

    def check_not_empty(self) -> None:
        """Raise if nothing was written, after removing the output folder: an index without
        shards would pass for a split to the loaders, and be refused as "not empty" by a rerun.

        Raises:
            DatasetError: naming the output folder and the likely cause.
        """
        if self.num_samples == 0:
            shutil.rmtree(self.out, ignore_errors=True)  # new or empty before the write
            dropped = f" ({self.describe_dropped()})" if self.rows_dropped else ""
            raise DatasetError(
                f"no samples were written to {self.out}{dropped}: the input is empty or, when "
                "concatenating, holds fewer tokens than one sample; add data or lower --concat_tokens"
            )

    def describe_dropped(self) -> str:
        """The bad rows skipped, e.g. ``"2 rows dropped: 1 invalid JSON, 1 missing text field"``."""
        total = sum(self.rows_dropped.values())
        if total == 0:
            return "no rows dropped"
        reasons = ", ".join(f"{n:,} {reason}" for reason, n in sorted(self.rows_dropped.items()))
        return f"{total:,} rows dropped: {reasons}"

    def describe(self) -> str:
        """A one-line summary for the log."""
        if self.num_tokens:
            written = f"wrote {self.num_samples:,} samples ({self.num_tokens:,} tokens)"
        else:
            written = f"wrote {self.num_samples:,} text samples (not tokenized)"
        return (
            f"read {self.rows_read:,} rows ({self.describe_dropped()}); {written}; "
            f"{format_size(self.bytes_on_disk)} on disk in {self.out}"
        )


def folder_size(folder: str) -> int:
    """Total size in bytes of the files under a local ``folder`` (0 for a remote or absent one)."""
    if "://" in folder or not Path(folder).is_dir():
        return 0
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def check_output_empty(out: str, flag: str = "--out_root") -> None:
    """Refuse to write into a folder that already has files, or that cannot be made.

    Args:
        out: the output folder.
        flag: the option that named it, for the message.

    Raises:
        ConfigError: naming the folder.
    """
    check_output_folder(out, flag)
    folder = Path(out)
    if folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(f"output folder '{out}' is not empty; delete it or choose another {flag}")


def check_compression(compression: str | None) -> str | None:
    """The shard compression to use: ``None`` for none (also spelled ``"none"``), else a known one.

    Args:
        compression: e.g. ``zstd``, ``zstd:7``, ``gz``, ``none`` or None.

    Returns:
        The compression, or None.

    Raises:
        ConfigError: on an unknown compression, with the closest known one.
    """
    if compression is None or compression.lower() in ("", "none"):
        return None
    if zstd_level(compression) is not None:
        return compression
    known = known_compressions()
    if compression not in known:
        raise ConfigError(
            f"--compression '{compression}' is not supported{did_you_mean(compression, known)} "
            "(use none, zstd, gz, bz2, br or snappy, optionally with a level: zstd:7)"
        )
    return compression


def known_compressions() -> set[str]:
    """Streaming's shard compressions (e.g. ``zstd``, ``zstd:7``, ``gz:9``, ``snappy``)."""
    from streaming.base.compression import get_compressions

    return get_compressions()


def write_mds(
    samples: Iterable[Mapping[str, Any]],
    out: str,
    columns: Mapping[str, str],
    compression: str | None,
    rows: RowStats | None = None,
) -> MDSWriteSummary:
    """Write ``samples`` to a new MDS folder.

    MDS writes ``index.json`` only when it finishes, so a killed process leaves none; on an
    exception (an interrupt included) the partial folder is removed, because the writer would
    otherwise finish an index for the samples written so far.

    Args:
        samples: dicts with the keys of ``columns``.
        out: the output folder (must be empty or absent).
        columns: MDS column encodings, e.g. :data:`TOKENS_COLUMNS` or :data:`TEXT_COLUMNS`.
        compression: shard compression (``zstd``) or None.
        rows: the counts of rows read and dropped while producing ``samples``, for the summary.

    Returns:
        The counts read and written.

    Raises:
        FileExistsError: if ``out`` is a local folder with files (it is left as it is).
        Whatever reading ``samples`` raises; the partial output folder is removed first.
    """
    num_samples = 0
    num_tokens = 0
    # Outside the ``try``: a folder refused as not empty is the user's and is left alone.
    mds_writer = open_mds_writer(out, columns, compression)
    try:
        with mds_writer as writer:
            for sample in samples:
                writer.write(dict(sample))
                num_samples += 1
                if "tokens" in sample:
                    num_tokens += len(sample["tokens"])
    except BaseException:
        # The writer finishes its index even when interrupted; remove the partial folder so it
        # cannot be mistaken for a whole dataset (the writers only write into an empty folder).
        if "://" not in out:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return MDSWriteSummary(
        num_samples=num_samples,
        num_tokens=num_tokens,
        out=out,
        rows_read=rows.rows_read if rows else 0,
        rows_dropped=dict(rows.dropped) if rows else {},
        bytes_on_disk=folder_size(out),
    )


def open_mds_writer(
    out: str, columns: Mapping[str, str], compression: str | None
) -> AbstractContextManager[MDSSampleWriter]:
    """An MDS writer for ``out``: :class:`~llmfoundry.data.mds_writer.MiniMDSWriter` (no torch,
    same files) for a local folder with the converters' encodings and no or zstd compression,
    else Streaming's ``MDSWriter``.

    Raises:
        FileExistsError: if ``out`` is a local folder that has files.
    """
    if supports(out, columns, compression):
        return MiniMDSWriter(out, columns, compression)
    from streaming import MDSWriter

    return MDSWriter(out=out, columns=dict(columns), compression=compression)


if TYPE_CHECKING:
    from llmfoundry.data.torch_datasets import ConcatTokensDataset as ConcatTokensDataset
    from llmfoundry.data.torch_datasets import NoConcatDataset as NoConcatDataset

_TORCH_DATASETS = ("ConcatTokensDataset", "NoConcatDataset")


def __getattr__(name: str) -> Any:
    """``ConcatTokensDataset`` and ``NoConcatDataset``, imported (with torch) on first use."""
    if name in _TORCH_DATASETS:
        from llmfoundry.data import torch_datasets

        return getattr(torch_datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
