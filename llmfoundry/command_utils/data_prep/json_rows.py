"""Reading JSON-lines files row by row, each bad row named by its file and line: the text
documents of ``convert_dataset_json`` and the examples of ``convert_finetuning_dataset``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmfoundry.data.data import BadRowError, RowStats
from llmfoundry.utils.exceptions import DatasetError, MissingFileError
from llmfoundry.utils.file_utils import JSONLineError
from llmfoundry.utils.file_utils import json_object_of_line as parse_json_line

JSON_SUFFIXES = (".jsonl", ".json")


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
    try:
        return parse_json_line(line)
    except JSONLineError as problem:
        fix = problem.fix or f"each line must be one JSON object with a {expected}"
        raise BadRowError(problem.reason, f"{where}: {problem.detail}; {fix}") from problem


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
