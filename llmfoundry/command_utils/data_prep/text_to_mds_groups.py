"""The conversion step of ``convert_text_to_mds``: the files read in order in this process, their
texts tokenized a batch at a time by worker processes, and the samples cut and written here, in
order, into one MDS folder. The output is the same for every number of processes.

(LLM Foundry splits the files into one group per process, each written to its own sub-folder
with the groups' indexes merged; the samples at the group boundaries then depend on the number
of processes. Here they do not, and the folder holds a single index and its shards.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from llmfoundry.command_utils.data_prep.workers import (
    concatenation_for,
    tokenizing_in_workers,
    write_documents,
)
from llmfoundry.data.data import MDSWriteSummary, RowStats, folder_size
from llmfoundry.utils.exceptions import DatasetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextConversion:
    """What one conversion needs: its files, where it writes them, and the options."""

    files: list[str]
    out: str
    tokenizer_name: str
    concat_tokens: int
    bos_text: str
    eos_text: str
    no_wrap: bool
    compression: str | None
    processes: int = 1  # worker processes tokenizing; 1 tokenizes in this process
    labels: list[str] | None = None  # how messages name ``files`` (default: their paths)
    trust_remote_code: bool = False  # let the tokenizer run the code its folder ships


def convert_text_files(conversion: TextConversion) -> MDSWriteSummary:
    """Convert the files into the MDS folder ``conversion.out``, with a progress bar of tokens.

    Returns:
        What was written.

    Raises:
        DatasetError: if a file is not UTF-8 text (names it).
    """
    concatenation = concatenation_for(
        conversion.concat_tokens,
        conversion.tokenizer_name,
        conversion.bos_text,
        conversion.eos_text,
        conversion.no_wrap,
        tokenizer_kwargs={"trust_remote_code": conversion.trust_remote_code},
    )
    rows = RowStats()
    with tokenizing_in_workers(concatenation, conversion.processes) as tokenizing:
        documents = read_documents(conversion.files, lambda: None, rows, conversion.labels)
        out, compression = conversion.out, conversion.compression
        summary = write_documents(documents, out, compression, rows, "tokens", tokenizing)
    return replace(summary, bytes_on_disk=folder_size(conversion.out))


def read_documents(
    files: list[str],
    on_file_done: Callable[[], object],
    rows: RowStats | None = None,
    labels: list[str] | None = None,
) -> Iterator[str]:
    """Yield each file's text, calling ``on_file_done`` after each.

    Args:
        files: the text files, in order.
        on_file_done: called after each file has been read.
        rows: counts the files read (each file is one row, a document).
        labels: how messages name the files (default: their paths).

    Raises:
        DatasetError: if a file is not UTF-8 text.
    """
    for file, label in zip(files, labels or files, strict=True):
        if rows is not None:
            rows.rows_read += 1
        try:
            text = Path(file).read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DatasetError(
                f"'{label}' is not UTF-8 text (byte {err.start}); convert or remove it"
            ) from err
        yield text
        on_file_done()
