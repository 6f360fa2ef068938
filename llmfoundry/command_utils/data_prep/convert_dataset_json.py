"""Convert JSON-lines files whose rows have a ``text`` field to MDS.

Each row is one document. With ``concat_tokens`` the documents are tokenized and concatenated
into samples of exactly that many tokens (column ``tokens``); without it each document is one
sample (column ``text``). As in LLM Foundry, the MDS files go straight into ``out_root``
(point a loader's ``local``/``split`` at it, e.g. ``--out_root my-data/train``).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from llmfoundry.command_utils.data_prep.json_rows import (
    JSON_SUFFIXES,
    find_json_files,
    iter_json_rows,
    iter_json_rows_or_errors,
    iter_json_texts,
    json_object_of_line,
    text_of_object,
)
from llmfoundry.command_utils.data_prep.workers import (
    check_sample_options,
    concatenation_for,
    resolve_workers,
    tokenizing_in_workers,
    write_documents,
)
from llmfoundry.data.data import MDSWriteSummary, RowStats, check_compression, check_output_empty
from llmfoundry.utils.exceptions import ConfigError, DatasetError
from llmfoundry.utils.file_utils import atomic_directory

logger = logging.getLogger(__name__)

# The JSON-lines reading lives in ``json_rows``; these names stay importable from here.
__all__ = [
    "JSON_SUFFIXES",
    "convert_dataset_json",
    "find_json_files",
    "iter_json_rows",
    "iter_json_rows_or_errors",
    "iter_json_texts",
    "json_object_of_line",
    "text_of_object",
]


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
    check_sample_options(concat_tokens, tokenizer, bos_text, eos_text, num_workers)
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
    concatenation = concatenation_for(concat_tokens, tokenizer, bos_text, eos_text, no_wrap)
    with (
        atomic_directory(out) as staging,
        tokenizing_in_workers(concatenation, workers) as tokenizing,
    ):
        rows = RowStats(skip_bad_rows)
        documents = iter_json_texts(files, rows)
        summary = write_documents(documents, str(staging), compression, rows, split, tokenizing)
        if summary.rows_read == 0:
            raise DatasetError(
                f"no samples were written to {out}: --path '{path}' holds no rows (its files are "
                "empty or blank); add one JSON object with a 'text' field per line"
            )
        summary = replace(summary, out=out)  # named by the folder it is renamed to
        summary.check_not_empty()
    logger.info("%s", summary.describe())
    return summary
