"""Convert a Hugging Face dataset (from the Hub or local files) to MDS, one folder per split.

``c4`` (``allenai/c4``) and ``the_pile`` are presets: they know their default subset, their
split names (``train``, ``train_small``, ``val``, ``val_small``, ``val_xsmall``) and text
column, as in LLM Foundry. Any other name or path goes to ``datasets.load_dataset``; its splits
are its own (default ``train``). A ``<split>_small``/``<split>_xsmall`` split is a copy of its
parent split truncated to a fixed number of written samples. With ``concat_tokens`` the texts
are tokenized and concatenated into samples of exactly that many tokens (column ``tokens``);
without it each row's text is one sample (column ``text``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import datasets

from llmfoundry.command_utils.data_prep.hf_rows import (
    check_text_column,
    iter_rows,
    load_splits,
    parse_tokenizer_kwargs,
    split_place,
)
from llmfoundry.command_utils.data_prep.hf_splits import (
    C4,
    DEFAULT_SPLITS,
    PRESET_SPLIT_NAMES,
    PRESETS,
    SMALL_SPLITS,
    THE_PILE,
    DatasetPreset,
    SplitPlan,
    dataset_split,
    estimated_samples,
    plan_split,
    preset_split,
    preset_splits,
)
from llmfoundry.command_utils.data_prep.workers import (
    Tokenizing,
    check_sample_options,
    concatenation_for,
    resolve_workers,
    tokenizing_in_workers,
    write_documents,
)
from llmfoundry.data.data import (
    BadRowError,
    MDSWriteSummary,
    RowStats,
    check_compression,
    check_output_empty,
)
from llmfoundry.utils.file_utils import atomic_directory

logger = logging.getLogger(__name__)

# The split planning lives in ``hf_splits`` and the row reading in ``hf_rows``; these names stay
# importable from here.
__all__ = [
    "C4",
    "DEFAULT_SPLITS",
    "PRESETS",
    "PRESET_SPLIT_NAMES",
    "SMALL_SPLITS",
    "THE_PILE",
    "DatasetPreset",
    "SampleOptions",
    "SplitPlan",
    "check_sample_options",
    "check_text_column",
    "convert_dataset_hf",
    "convert_split",
    "dataset_split",
    "estimated_samples",
    "iter_rows",
    "load_splits",
    "parse_tokenizer_kwargs",
    "plan_split",
    "preset_split",
    "preset_splits",
    "split_place",
    "texts_of_rows",
]


@dataclass(frozen=True)
class SampleOptions:
    """How rows become samples: the text column, bad-row handling and tokenization (None:
    text samples)."""

    text_column: str
    skip_bad_rows: bool
    tokenizing: Tokenizing | None


def convert_dataset_hf(
    dataset: str,
    out_root: str,
    data_subset: str | None = None,
    splits: list[str] | None = None,
    compression: str | None = None,
    concat_tokens: int | None = None,
    tokenizer: str | None = None,
    tokenizer_kwargs: str | Mapping[str, Any] | None = None,
    bos_text: str | None = "",
    eos_text: str | None = "",
    no_wrap: bool = False,
    num_workers: int | None = None,
    text_column: str | None = None,
    data_files: list[str] | None = None,
    skip_bad_rows: bool = False,
) -> dict[str, MDSWriteSummary]:
    """Convert the splits of a Hugging Face dataset to MDS folders ``out_root/<split>``.

    Args:
        dataset: ``c4``/``allenai/c4``/``the_pile`` (presets), another Hub name, a local
            dataset folder or file, or a builder name (``json``, ``parquet``) with ``data_files``.
        out_root: the output folder; each split goes to its own (empty) sub-folder.
        data_subset: the dataset's subset (config); presets default to theirs (``en`` for c4).
        splits: the output splits; presets default to all five, other datasets to ``train``.
        compression: shard compression (``zstd``), or None/``"none"``.
        concat_tokens: tokens per sample; None writes untokenized text samples.
        tokenizer: the tokenizer folder or hub name (required with ``concat_tokens``).
        tokenizer_kwargs: keyword arguments for the tokenizer, as a JSON object string or a dict.
        bos_text: text put before each document when concatenating.
        eos_text: text put after each document when concatenating.
        no_wrap: when concatenating, drop the rest of a document once it has filled a sample.
        num_workers: worker processes tokenizing batches of texts (the rows are read here and
            the samples written here in order, so the output is the same for any count); None
            uses one per usable CPU core, 0 or 1 tokenizes in this process.
        text_column: the column holding the text (default: the preset's, else ``text``).
        data_files: files for a builder name such as ``json`` (``load_dataset``'s data_files).
        skip_bad_rows: skip (and count) rows whose text is missing or not a string, instead of
            failing on the first.

    Returns:
        What was read and written, by output split (each also logged as a summary).

    Raises:
        ConfigError: on bad options, a split the dataset does not have (lists the ones it
            has), an unknown text column, or a non-empty output folder.
        MissingFileError: if a local dataset path does not exist.
        DatasetError: if the dataset cannot be loaded or read, on a bad row (names the split
            and row), or when a split yields no sample.
        TokenizerError: if the tokenizer cannot be loaded.
    """
    compression = check_compression(compression)
    check_sample_options(concat_tokens, tokenizer, bos_text, eos_text, num_workers)
    kwargs = parse_tokenizer_kwargs(tokenizer_kwargs)
    preset = PRESETS.get(dataset)
    subset = data_subset
    if subset is None and preset is not None:
        subset = preset.default_subset
    wanted = list(splits or (PRESET_SPLIT_NAMES if preset else DEFAULT_SPLITS))
    if preset is not None:  # a preset's split names are known before anything is loaded
        for name in wanted:
            preset_split(preset, dataset, name)
    for name in wanted:
        check_output_empty(os.path.join(out_root, name))

    loaded = load_splits(preset.hub_name if preset else dataset, subset, data_files)
    plans = [plan_split(preset, loaded, dataset, name) for name in wanted]
    column = text_column or (preset.text_column if preset else "text")
    concatenation = concatenation_for(
        concat_tokens, tokenizer, bos_text, eos_text, no_wrap, tokenizer_kwargs=kwargs
    )
    workers = resolve_workers(num_workers, "--num_workers") if concatenation else 0
    summaries: dict[str, MDSWriteSummary] = {}
    with tokenizing_in_workers(concatenation, workers) as tokenizing:
        options = SampleOptions(column, skip_bad_rows, tokenizing)
        for plan in plans:
            rows = loaded[plan.hf_split]
            check_text_column(rows, column, dataset, plan.hf_split)
            total = estimated_samples(preset, plan, concat_tokens)
            # Each split is written aside and renamed into place once whole: a killed run
            # leaves the splits it finished, and no half split.
            with atomic_directory(os.path.join(out_root, plan.folder)) as staging:
                summary = convert_split(rows, plan, out_root, options, compression, total, staging)
            logger.info("split %s: %s", plan.folder, summary.describe())
            summaries[plan.folder] = summary
    return summaries


def convert_split(
    rows: datasets.IterableDataset,
    plan: SplitPlan,
    out_root: str,
    options: SampleOptions,
    compression: str | None,
    total: int | None,
    staging: str | os.PathLike[str] | None = None,
) -> MDSWriteSummary:
    """Write one split to ``out_root/<plan.folder>`` (into ``staging`` when given, which the
    caller renames to it; the summary names ``out_root/<plan.folder>``).

    The rows are read here, in order; when concatenating, the options' pool tokenizes batches
    of them (in worker processes) and the samples are cut and written here, in order.

    Returns:
        What was read and written.

    Raises:
        DatasetError: on a bad row, unreadable data, or when no sample was written.
    """
    final = os.path.join(out_root, plan.folder)
    stats = RowStats(options.skip_bad_rows)
    texts = texts_of_rows(rows, plan.hf_split, options.text_column, stats, None)
    summary = write_documents(
        texts,
        str(staging or final),
        compression,
        stats,
        plan.folder,
        options.tokenizing,
        total=total,
        max_samples=plan.max_samples,
    )
    summary = replace(summary, out=final)
    summary.check_not_empty()
    return summary


def texts_of_rows(
    rows: Iterable[Mapping[str, Any]],
    hf_split: str,
    column: str,
    stats: RowStats,
    worker: int | None,
) -> Iterator[str]:
    """Yield each row's text, counting rows in ``stats``.

    Raises:
        BadRowError: naming the split, row (from 1) and column of a row whose text is missing
            or not a string, unless ``stats`` skips bad rows.
        DatasetError: if the dataset's files cannot be read.
    """
    place = split_place(hf_split, worker)
    for number, row in iter_rows(rows, place, stats):
        text = row.get(column)
        if isinstance(text, str):
            yield text
            continue
        reason = "missing text field" if text is None else "non-string text field"
        problem = (
            "is missing or null"
            if text is None
            else f"is of type {type(text).__name__}, not a string"
        )
        stats.bad_row(BadRowError(reason, f"{place} row {number}: field '{column}' {problem}"))
