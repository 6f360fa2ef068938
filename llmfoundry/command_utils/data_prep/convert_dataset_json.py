"""Convert JSON-lines files whose rows have a ``text`` field to MDS.

Each row is one document. With ``concat_tokens`` the documents are tokenized and concatenated
into samples of exactly that many tokens (column ``tokens``); without it each document is one
sample (column ``text``). As in LLM Foundry, the MDS files go straight into ``out_root``
(point a loader's ``local``/``split`` at it, e.g. ``--out_root my-data/train``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llmfoundry.command_utils.data_prep.workers import (
    resolve_workers,
    token_batches_in,
    token_progress,
    tokenizer_pool,
)
from llmfoundry.data.data import (
    TEXT_COLUMNS,
    TOKENS_COLUMNS,
    BadRowError,
    ConcatTokensDataset,
    MDSWriteSummary,
    NoConcatDataset,
    RowStats,
    check_compression,
    check_output_empty,
    write_mds,
)
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from llmfoundry.utils.file_utils import atomic_directory
from llmfoundry.utils.tokenizer_utils import converter_tokenizer

logger = logging.getLogger(__name__)

JSON_SUFFIXES = (".jsonl", ".json")


def convert_dataset_json(
    path: str,
    out_root: str,
    split: str = "train",
    concat_tokens: int | None = None,
    tokenizer: str | None = None,
    bos_text: str | None = "",
    eos_text: str | None = "",
    no_wrap: bool = False,
    compression: str | None = None,
    skip_bad_rows: bool = False,
    num_workers: int | None = None,
) -> MDSWriteSummary:
    """Convert a JSON-lines file, or a folder of them, to an MDS folder.

    Args:
        path: a ``.jsonl``/``.json`` file with one JSON object per line, or a folder searched
            recursively for such files (read in sorted order).
        out_root: the output folder (must be empty); its name is usually the split name.
        split: the split of the input to read: a JSON-lines file has only ``train``.
        concat_tokens: tokens per sample; None writes untokenized text samples.
        tokenizer: the tokenizer folder or hub name (required with ``concat_tokens``).
        bos_text: text put before each document when concatenating.
        eos_text: text put after each document when concatenating.
        no_wrap: when concatenating, drop the rest of a document once it has filled a sample.
        compression: shard compression (``zstd``), or None/``"none"``.
        skip_bad_rows: skip (and count) rows that are not valid UTF-8 JSON objects with a
            string ``text`` field, instead of failing on the first.
        num_workers: worker processes tokenizing batches of documents (the rows are read
            here, and the samples written here in input order, so the output is the same for
            any count); None uses one per usable CPU core, 0 or 1 tokenizes in this process.

    Returns:
        What was read and written (also logged as a summary).

    Raises:
        MissingFileError: if ``path`` does not exist.
        DatasetError: on a row that is not a valid UTF-8 JSON object with a string ``text``
            field (names the file and line; unless ``skip_bad_rows``), or when no sample was
            written.
        ConfigError: on inconsistent options or a non-empty output folder.
        TokenizerError: if the tokenizer cannot be loaded.
    """
    compression = check_compression(compression)
    workers = resolve_workers(num_workers, "--num_workers")
    if split != "train":
        raise ConfigError(
            f"--split={split!r}: JSON-lines input has only a 'train' split; put other splits in "
            "their own file and --out_root"
        )
    files = find_json_files(path)
    out = out_root
    check_output_empty(out)
    # Written aside and renamed into place when whole: a killed run leaves no half dataset
    # at --out_root (only a hidden staging folder, which the next run removes).
    with atomic_directory(out) as staging:
        rows = RowStats(skip_bad_rows)
        if concat_tokens is None:
            if tokenizer is not None:
                logger.warning(
                    "--tokenizer is ignored without --concat_tokens: writing text samples"
                )
            documents = tqdm(iter_json_texts(files, rows), desc="documents", unit=" docs")
            summary = write_mds(
                NoConcatDataset(documents), str(staging), TEXT_COLUMNS, compression, rows
            )
        else:
            if tokenizer is None:
                raise ConfigError(
                    "--concat_tokens needs --tokenizer to tokenize the documents with"
                )
            built = converter_tokenizer(tokenizer)
            with tokenizer_pool(built, workers) as pool, token_progress("tokens") as progress:
                samples = ConcatTokensDataset(
                    iter_json_texts(files, rows),
                    built,
                    concat_tokens,
                    bos_text or "",
                    eos_text or "",
                    no_wrap,
                    tokenize_batches=token_batches_in(pool, progress),
                )
                summary = write_mds(samples, str(staging), TOKENS_COLUMNS, compression, rows)
        if summary.rows_read == 0:
            raise DatasetError(
                f"no samples were written to {out}: --path '{path}' holds no rows (its files are "
                "empty or blank); add one JSON object with a 'text' field per line"
            )
        summary = replace(summary, out=out)  # named by the folder it is renamed to
        summary.check_not_empty()
    logger.info("%s", summary.describe())
    return summary


def find_json_files(path: str) -> list[Path]:
    """The JSON-lines files at ``path``: the file itself, or a folder's, recursively and sorted.

    Raises:
        MissingFileError: if ``path`` does not exist.
        DatasetError: if a folder holds no ``.jsonl``/``.json`` file.
    """
    source = Path(path)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise MissingFileError(
            f"--path '{path}' does not exist; give a JSON-lines file or a folder of them"
        )
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix in JSON_SUFFIXES)
    if not files:
        raise DatasetError(f"folder '{path}' holds no {' or '.join(JSON_SUFFIXES)} files")
    return files


def iter_json_texts(files: list[Path], rows: RowStats | None = None) -> Iterator[str]:
    """Yield the ``text`` field of every row of the JSON-lines ``files`` (blank lines skipped).

    Args:
        files: the files, read in order.
        rows: counts the rows read and decides what happens to bad ones (default: fail).

    Raises:
        BadRowError: naming the file and line of a row that is not UTF-8, not valid JSON, not an
            object, or has no string ``text`` field (unless ``rows`` skips bad rows).
    """
    rows = rows if rows is not None else RowStats()
    for where, row in iter_json_rows(files, rows, "'text' field"):
        try:
            yield text_of_object(row, where)
        except BadRowError as bad:
            rows.bad_row(bad)


def iter_json_rows(
    files: list[Path], rows: RowStats, expected: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(file:line, object)`` for every row of the JSON-lines ``files``.

    Blank lines are skipped; every other line counts as a row read.

    Args:
        files: the files, read in order.
        rows: counts the rows read and decides what happens to bad ones.
        expected: what a row must hold, for messages (``'text' field``).

    Raises:
        BadRowError: naming the file and line of a row that is not UTF-8, not valid JSON or not
            an object (unless ``rows`` skips bad rows).
    """
    for where, row in iter_json_rows_or_errors(files, rows, expected):
        if isinstance(row, BadRowError):
            rows.bad_row(row)
        else:
            yield where, row


def iter_json_rows_or_errors(
    files: list[Path], rows: RowStats, expected: str
) -> Iterator[tuple[str, dict[str, Any] | BadRowError]]:
    """Like :func:`iter_json_rows`, but a bad row is yielded as its error, for the caller to
    raise or count when it reaches the row (rows are counted as read here).
    """
    for file in files:
        # Binary, decoded line by line, so that bad UTF-8 is reported with its line number.
        with file.open("rb") as lines:
            for line_number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                rows.rows_read += 1
                where = f"{file}:{line_number}"
                row: dict[str, Any] | BadRowError
                try:
                    row = json_object_of_line(line, where, expected)
                except BadRowError as bad:
                    row = bad
                yield where, row


def json_object_of_line(line: bytes | str, where: str, expected: str) -> dict[str, Any]:
    """Parse one JSON-lines row, which must be a JSON object.

    Args:
        line: the row, as read from the file.
        where: ``file:line``, for messages.
        expected: what the object must hold, for messages (``'text' field``).

    Raises:
        BadRowError: if the row is not UTF-8, not valid JSON or not an object.
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadRowError(
                "invalid UTF-8",
                f"{where}: not valid UTF-8 (byte {err.start} of the line); re-encode the file as "
                "UTF-8",
            ) from err
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise BadRowError(
            "invalid JSON",
            f"{where}: not valid JSON ({err.msg}); each line must be one JSON object with a "
            f"{expected}",
        ) from err
    if not isinstance(row, dict):
        raise BadRowError(
            "not a JSON object",
            f"{where}: expected a JSON object with a {expected}, got {type(row).__name__}",
        )
    return row


def text_of_object(row: dict[str, Any], where: str) -> str:
    """The ``text`` field of a parsed row.

    Raises:
        BadRowError: if the field is missing or not a string.
    """
    if "text" not in row:
        keys = ", ".join(row) or "none"
        raise BadRowError(
            "missing text field",
            f"{where}: row has no 'text' field (keys: {keys}); every row needs one",
        )
    if not isinstance(row["text"], str):
        raise BadRowError(
            "non-string text field",
            f"{where}: field 'text' must be a string, got {type(row['text']).__name__}",
        )
    return row["text"]
