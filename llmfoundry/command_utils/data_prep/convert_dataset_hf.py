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

import contextlib
import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.data_prep.workers import (
    TokenizerPool,
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
from llmfoundry.utils.exceptions import (
    ConfigError,
    DatasetError,
    MissingFileError,
    UserError,
    did_you_mean,
    first_line,
)
from llmfoundry.utils.file_utils import atomic_directory
from llmfoundry.utils.tokenizer_utils import converter_tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitPlan:
    """Where one output split comes from.

    Attributes:
        folder: the output sub-folder (the split name the user asked for, e.g. ``val_small``).
        hf_split: the dataset's split it is read from (e.g. ``validation``).
        max_samples: write at most this many samples (a truncated copy), or None for all.
        raw_rows: the split's row count when known (presets), for the progress bar's total.
    """

    folder: str
    hf_split: str
    max_samples: int | None = None
    raw_rows: int | None = None


@dataclass(frozen=True)
class DatasetPreset:
    """What LLM Foundry knows about a pretraining dataset on the Hub.

    Attributes:
        hub_name: the name given to ``datasets.load_dataset``.
        default_subset: the subset (config) used when ``--data_subset`` is not given.
        text_column: the column holding the documents.
        chars_per_sample: average characters per row, for estimating the samples written.
        chars_per_token: average characters per token, for the same estimate.
        splits: the output splits it offers, by name.
    """

    hub_name: str
    default_subset: str | None
    text_column: str
    chars_per_sample: int
    chars_per_token: int
    splits: Mapping[str, SplitPlan]


# Truncated copies: the parent split and the number of samples they keep (LLM Foundry's).
SMALL_SPLITS: dict[str, tuple[str, int]] = {
    "train_small": ("train", 100_000),
    "val_small": ("val", 10_000),
    "val_xsmall": ("val", 3_000),
}
PRESET_SPLIT_NAMES = ("train", "train_small", "val", "val_small", "val_xsmall")
DEFAULT_SPLITS = ("train",)


def preset_splits(train_rows: int, val_rows: int) -> dict[str, SplitPlan]:
    """The five splits of a preset whose Hub splits are ``train`` and ``validation``."""
    full = {
        "train": SplitPlan("train", "train", None, train_rows),
        "val": SplitPlan("val", "validation", None, val_rows),
    }
    small = {
        name: SplitPlan(name, full[parent].hf_split, count, count)
        for name, (parent, count) in SMALL_SPLITS.items()
    }
    return {**full, **small}


C4 = DatasetPreset(
    hub_name="allenai/c4",
    default_subset="en",
    text_column="text",
    chars_per_sample=2163,
    chars_per_token=4,
    splits=preset_splits(train_rows=364_868_892, val_rows=364_608),
)
THE_PILE = DatasetPreset(
    hub_name="the_pile",
    default_subset="all",
    text_column="text",
    chars_per_sample=6212,
    chars_per_token=4,
    splits=preset_splits(train_rows=210_000_000, val_rows=214_670),
)
PRESETS: dict[str, DatasetPreset] = {"allenai/c4": C4, "c4": C4, "the_pile": THE_PILE}


@dataclass(frozen=True)
class SampleOptions:
    """How rows become samples: the text column, bad-row handling and tokenization."""

    text_column: str
    skip_bad_rows: bool
    tokenizer: PreTrainedTokenizerBase | None
    concat_tokens: int | None
    bos_text: str
    eos_text: str
    no_wrap: bool


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
    options = SampleOptions(
        text_column=column,
        skip_bad_rows=skip_bad_rows,
        tokenizer=converter_tokenizer(tokenizer, kwargs) if tokenizer and concat_tokens else None,
        concat_tokens=concat_tokens,
        bos_text=bos_text or "",
        eos_text=eos_text or "",
        no_wrap=no_wrap,
    )
    summaries: dict[str, MDSWriteSummary] = {}
    pool = None
    if options.tokenizer is not None:
        pool = tokenizer_pool(options.tokenizer, resolve_workers(num_workers, "--num_workers"))
    with pool or contextlib.nullcontext():
        for plan in plans:
            rows = loaded[plan.hf_split]
            check_text_column(rows, column, dataset, plan.hf_split)
            total = estimated_samples(preset, plan, concat_tokens)
            # Each split is written aside and renamed into place once whole: a killed run
            # leaves the splits it finished, and no half split.
            with atomic_directory(os.path.join(out_root, plan.folder)) as staging:
                summary = convert_split(
                    rows, plan, out_root, options, compression, pool, total, str(staging)
                )
            logger.info("split %s: %s", plan.folder, summary.describe())
            summaries[plan.folder] = summary
    return summaries


def check_sample_options(
    concat_tokens: int | None,
    tokenizer: str | None,
    bos_text: str | None,
    eos_text: str | None,
    num_workers: int | None,
) -> None:
    """Fail on options that cannot work together; warn about ignored ones.

    Raises:
        ConfigError: naming the option.
    """
    if concat_tokens is None:
        if tokenizer is not None or bos_text or eos_text:
            logger.warning(
                "--tokenizer/--bos_text/--eos_text are ignored without --concat_tokens: "
                "writing text samples"
            )
    elif (
        not isinstance(concat_tokens, int) or isinstance(concat_tokens, bool) or concat_tokens <= 0
    ):
        raise ConfigError(f"--concat_tokens must be a positive integer, got {concat_tokens!r}")
    elif tokenizer is None:
        raise ConfigError("--concat_tokens needs --tokenizer to tokenize the documents with")
    if num_workers is not None and (
        not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0
    ):
        raise ConfigError(f"--num_workers must be 0 or more, got {num_workers!r}")


def parse_tokenizer_kwargs(tokenizer_kwargs: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``--tokenizer_kwargs`` as a dict (it may be given as a JSON object string).

    Raises:
        ConfigError: if the string is not a JSON object.
    """
    if tokenizer_kwargs is None or tokenizer_kwargs == "":
        return {}
    if not isinstance(tokenizer_kwargs, str):
        return dict(tokenizer_kwargs)
    try:
        parsed = json.loads(tokenizer_kwargs)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"--tokenizer_kwargs is not valid JSON ({err.msg}): {tokenizer_kwargs!r}; "
            "pass a JSON object, e.g. '{\"model_max_length\": 4096}'"
        ) from err
    if not isinstance(parsed, dict):
        raise ConfigError(
            f"--tokenizer_kwargs must be a JSON object, got {type(parsed).__name__}: "
            f"{tokenizer_kwargs!r}"
        )
    return parsed


def preset_split(preset: DatasetPreset, dataset: str, name: str) -> SplitPlan:
    """The plan of a preset's split.

    Raises:
        ConfigError: if the preset has no such split (lists the ones it has).
    """
    if name not in preset.splits:
        raise ConfigError(
            f"--splits: dataset '{dataset}' has no split '{name}'"
            f"{did_you_mean(name, preset.splits)}; available: {', '.join(preset.splits)}"
        )
    return preset.splits[name]


def dataset_split(loaded: Mapping[str, Any], dataset: str, name: str) -> SplitPlan:
    """The plan of an output split of a non-preset dataset.

    A split the dataset has is read whole; ``val`` may be read from ``validation``, as the
    presets do. ``train_small``, ``val_small`` and ``val_xsmall`` are truncated copies of
    ``train``/``val`` (as in the presets) when the dataset has no split of that name itself.

    Raises:
        ConfigError: if the split cannot be made (lists the dataset's splits).
    """
    if name in loaded:
        return SplitPlan(name, name)
    if name == "val" and "validation" in loaded:
        return SplitPlan(name, "validation")
    if name in SMALL_SPLITS:
        parent, count = SMALL_SPLITS[name]
        for candidate in (parent, "validation") if parent == "val" else (parent,):
            if candidate in loaded:
                return SplitPlan(name, candidate, count)
    raise ConfigError(
        f"--splits: dataset '{dataset}' has no split '{name}'{did_you_mean(name, loaded)}; "
        f"available: {', '.join(loaded)}"
    )


def plan_split(
    preset: DatasetPreset | None, loaded: Mapping[str, Any], dataset: str, name: str
) -> SplitPlan:
    """Where output split ``name`` comes from, checked against the splits that were loaded.

    Raises:
        ConfigError: if the split does not exist (lists the available ones).
    """
    if preset is None:
        return dataset_split(loaded, dataset, name)
    plan = preset_split(preset, dataset, name)
    if plan.hf_split not in loaded:  # e.g. a partial mirror of the preset's dataset
        raise ConfigError(
            f"dataset '{dataset}' has no split '{plan.hf_split}' (needed for --splits {name}); "
            f"available: {', '.join(loaded)}"
        )
    return plan


def load_splits(
    dataset: str, subset: str | None, data_files: list[str] | None
) -> Mapping[str, datasets.IterableDataset]:
    """Open every split of a dataset for streaming (nothing is downloaded or cached up front).

    Raises:
        MissingFileError: if a local path does not exist.
        ConfigError: if the subset does not exist.
        DatasetError: if the dataset cannot be loaded.
    """
    looks_local = dataset.startswith((".", "/", "~")) or dataset.count("/") > 1
    if looks_local and not Path(dataset).expanduser().exists():
        raise MissingFileError(
            f"--dataset '{dataset}' does not exist; give a Hub name, a local dataset folder or "
            "file, or a builder name (json, parquet) with --data_files"
        )
    try:
        loaded = datasets.load_dataset(
            str(Path(dataset).expanduser()) if looks_local else dataset,
            name=subset,
            data_files=data_files,
            streaming=True,
        )
    except ValueError as err:
        if subset is not None and "config" in str(err).lower():
            raise ConfigError(
                f"--data_subset '{subset}' is not a subset of dataset '{dataset}' "
                f"({first_line(err)})"
            ) from err
        raise DatasetError(f"could not load dataset '{dataset}': {first_line(err)}") from err
    except Exception as err:  # datasets raises many kinds (missing files, offline, bad cards)
        raise DatasetError(
            f"could not load dataset '{dataset}' ({type(err).__name__}: {first_line(err)}); "
            "check the name or path (the Hub needs a network connection)"
        ) from err
    if not isinstance(loaded, datasets.IterableDatasetDict):
        raise DatasetError(f"dataset '{dataset}' did not load as a set of splits")
    return {str(name): split for name, split in loaded.items()}


def check_text_column(
    rows: datasets.IterableDataset, column: str, dataset: str, hf_split: str
) -> None:
    """Fail early if the split's known columns do not include the text column.

    Raises:
        ConfigError: naming the column and listing the split's columns.
    """
    columns = rows.column_names
    if columns is not None and column not in columns:
        raise ConfigError(
            f"split '{hf_split}' of dataset '{dataset}' has no column '{column}'"
            f"{did_you_mean(column, columns)} (columns: {', '.join(columns)}); "
            "pass --text_column"
        )


def estimated_samples(
    preset: DatasetPreset | None, plan: SplitPlan, concat_tokens: int | None
) -> int | None:
    """How many samples a split will probably yield, for the progress bar (None if unknown)."""
    if plan.max_samples is not None:
        return plan.max_samples
    if preset is None or plan.raw_rows is None:
        return None
    if concat_tokens is None:
        return plan.raw_rows
    return plan.raw_rows * preset.chars_per_sample // (preset.chars_per_token * concat_tokens)


def convert_split(
    rows: datasets.IterableDataset,
    plan: SplitPlan,
    out_root: str,
    options: SampleOptions,
    compression: str | None,
    pool: TokenizerPool | None,
    total: int | None,
    staging: str | None = None,
) -> MDSWriteSummary:
    """Write one split to ``out_root/<plan.folder>`` (into ``staging`` when given, which the
    caller renames to it; the summary names ``out_root/<plan.folder>``).

    The rows are read here, in order; when concatenating, ``pool`` tokenizes batches of them
    (in worker processes) and the samples are cut and written here, in order.

    Returns:
        What was read and written.

    Raises:
        DatasetError: on a bad row, unreadable data, or when no sample was written.
    """
    final = os.path.join(out_root, plan.folder)
    out = staging or final
    stats = RowStats(options.skip_bad_rows)
    texts = texts_of_rows(rows, plan.hf_split, options.text_column, stats, None)
    samples: Iterable[Mapping[str, Any]]
    if options.concat_tokens is None or options.tokenizer is None or pool is None:
        progress = tqdm(desc=plan.folder, total=total, unit=" samples")
        samples = counted(NoConcatDataset(texts), progress)
        columns = TEXT_COLUMNS
    else:
        progress = token_progress(plan.folder)
        samples = ConcatTokensDataset(
            texts,
            options.tokenizer,
            options.concat_tokens,
            options.bos_text,
            options.eos_text,
            options.no_wrap,
            tokenize_batches=token_batches_in(pool, progress),
        )
        columns = TOKENS_COLUMNS
    if plan.max_samples is not None:
        samples = itertools.islice(samples, plan.max_samples)
    try:
        summary = write_mds(samples, out, columns, compression, stats)
    finally:
        progress.close()
    summary = replace(summary, out=final)
    summary.check_not_empty()
    return summary


def counted(samples: Iterable[dict[str, Any]], progress: tqdm) -> Iterator[dict[str, Any]]:
    """Pass ``samples`` through, advancing ``progress`` by one for each."""
    for sample in samples:
        progress.update(1)
        yield sample


def iter_rows(
    rows: Iterable[Mapping[str, Any]], place: str, stats: RowStats
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Yield ``(row number from 1, row)``, counting each row read in ``stats``.

    Args:
        rows: the split's rows.
        place: the split (and worker), for messages (``split 'train'``).
        stats: counts the rows read.

    Raises:
        DatasetError: if the dataset's files cannot be read (names the last good row).
    """
    iterator = iter(rows)
    for number in itertools.count(1):
        try:
            row = next(iterator)
        except StopIteration:
            return
        except UserError:
            raise
        except Exception as err:  # pyarrow/datasets parse errors: any kind, one message
            raise DatasetError(
                f"reading {place} after row {number - 1} failed ({type(err).__name__}: "
                f"{first_line(err)}); fix the data files (for JSON lines, "
                "convert_dataset_json.py names the bad line)"
            ) from err
        stats.rows_read += 1
        yield number, row


def split_place(hf_split: str, worker: int | None) -> str:
    """How messages name a split's rows: ``split 'train'`` (and the worker, if several)."""
    return f"split '{hf_split}'" if worker is None else f"split '{hf_split}' (worker {worker})"


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
