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
from pathlib import Path

from tqdm import tqdm

from llmfoundry.data.data import (
    TEXT_COLUMNS,
    TOKENS_COLUMNS,
    ConcatTokensDataset,
    MDSWriteSummary,
    NoConcatDataset,
    check_compression,
    write_mds,
)
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from llmfoundry.utils.tokenizer_utils import build_tokenizer

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

    Returns:
        What was written.

    Raises:
        MissingFileError: if ``path`` does not exist.
        DatasetError: on a row that is not a JSON object with a string ``text`` field (names the
            file and line), or when no sample was written.
        ConfigError: on inconsistent options or a non-empty output folder.
        TokenizerError: if the tokenizer cannot be loaded.
    """
    compression = check_compression(compression)
    if split != "train":
        raise ConfigError(
            f"--split={split!r}: JSON-lines input has only a 'train' split; put other splits in "
            "their own file and --out_root"
        )
    files = find_json_files(path)
    out = out_root
    check_output_empty(out)
    documents = tqdm(iter_json_texts(files), desc="documents", unit=" docs")
    if concat_tokens is None:
        if tokenizer is not None:
            logger.warning("--tokenizer is ignored without --concat_tokens: writing text samples")
        summary = write_mds(NoConcatDataset(documents), out, TEXT_COLUMNS, compression)
    else:
        if tokenizer is None:
            raise ConfigError("--concat_tokens needs --tokenizer to tokenize the documents with")
        built = build_tokenizer(tokenizer)
        samples = ConcatTokensDataset(
            documents, built, concat_tokens, bos_text or "", eos_text or "", no_wrap
        )
        summary = write_mds(samples, out, TOKENS_COLUMNS, compression)
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


def check_output_empty(out: str) -> None:
    """Refuse to write into a folder that already has files.

    Raises:
        ConfigError: naming the folder.
    """
    folder = Path(out)
    if folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(
            f"output folder '{out}' is not empty; delete it or choose another --out_root"
        )


def iter_json_texts(files: list[Path]) -> Iterator[str]:
    """Yield the ``text`` field of every row of the JSON-lines ``files`` (blank lines skipped).

    Raises:
        DatasetError: naming the file and line of a row that is not valid JSON, not an object,
            or has no string ``text`` field.
    """
    for file in files:
        with file.open(encoding="utf-8") as lines:
            for line_number, line in enumerate(lines, start=1):
                if line.strip():
                    yield text_of_row(line, f"{file}:{line_number}")


def text_of_row(line: str, where: str) -> str:
    """The ``text`` field of one JSON-lines row.

    Args:
        line: the row.
        where: ``file:line``, for messages.

    Raises:
        DatasetError: if the row is not a JSON object with a string ``text`` field.
    """
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{where}: not valid JSON ({err.msg}); each line must be one JSON object with a 'text' field"
        ) from err
    if not isinstance(row, dict):
        raise DatasetError(
            f"{where}: expected a JSON object with a 'text' field, got {type(row).__name__}"
        )
    if "text" not in row:
        keys = ", ".join(row) or "none"
        raise DatasetError(f"{where}: row has no 'text' field (keys: {keys}); every row needs one")
    if not isinstance(row["text"], str):
        raise DatasetError(f"{where}: 'text' must be a string, got {type(row['text']).__name__}")
    return row["text"]
