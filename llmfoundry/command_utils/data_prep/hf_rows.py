"""Reading rows for the converters: a Hugging Face dataset's splits opened for streaming, its
rows numbered for messages, and the ``--tokenizer_kwargs`` option (``convert_dataset_hf`` and
``convert_finetuning_dataset`` share them).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
from datasets import config as datasets_config

from llmfoundry.data.data import RowStats
from llmfoundry.utils.exceptions import (
    ConfigError,
    DatasetError,
    MissingFileError,
    UserError,
    did_you_mean,
    first_line,
)
from llmfoundry.utils.file_utils import looks_like_local_path


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


def load_splits(
    dataset: str, subset: str | None, data_files: list[str] | None
) -> Mapping[str, datasets.IterableDataset]:
    """Open every split of a dataset for streaming (nothing is downloaded or cached up front).

    Raises:
        MissingFileError: if a local path does not exist.
        ConfigError: if the subset does not exist.
        DatasetError: if the dataset cannot be loaded.
    """
    looks_local = looks_like_local_path(dataset)
    if looks_local and not Path(dataset).expanduser().exists():
        raise MissingFileError(
            f"--dataset '{dataset}' does not exist; give a Hub name, a local dataset folder or "
            "file, or a builder name (json, parquet) with --data_files"
        )
    try:
        with _epoch_counter_without_torch():
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


@contextmanager
def _epoch_counter_without_torch() -> Iterator[None]:
    """While a streaming dataset is opened, tell ``datasets`` that torch is not installed.

    With torch installed, ``datasets`` keeps each streaming dataset's epoch in a shared torch
    tensor (for ``DataLoader`` workers) and imports torch to make it, about 1.5 s. The converters
    read their rows in this process, so the plain integer counter ``datasets`` uses without torch
    serves them. When torch is already loaded nothing is changed.
    """
    if "torch" in sys.modules:
        yield
        return
    torch_available = datasets_config.TORCH_AVAILABLE
    datasets_config.TORCH_AVAILABLE = False
    try:
        yield
    finally:
        datasets_config.TORCH_AVAILABLE = torch_available


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
