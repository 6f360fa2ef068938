"""Convert finetuning examples (prompt/response pairs or chats) to tokenized MDS, one folder per split.

The rows come from a Hugging Face dataset (a Hub name, a local dataset folder, or a builder
such as ``json`` with ``data_files``) or from local JSON-lines files: ``--dataset rows.jsonl``
is a single ``train`` split, and a folder holding ``<split>.jsonl`` (or ``.json``) files has one
split per file. JSON-lines rows are read here, line by line, so a bad row is named by file and
line; other sources are streamed by ``datasets`` (optionally in DataLoader worker processes).

Each row goes through the preprocessing function (``--preprocessor``, else the one registered
for the dataset's name in :data:`~llmfoundry.data.finetuning.dataset_constructor`, else none)
and must then hold ``prompt``/``response`` strings or a ``messages`` chat. It is tokenized into
turns exactly as the ``finetuning`` loader tokenizes examples it reads from a Hugging Face
dataset, and written in the layout that loader reads from MDS:

* prompt/response datasets: columns ``input_ids`` (the prompt) and ``labels`` (the response),
  ``ndarray:int32``, one turn per sample;
* chat datasets (the first example has ``messages``): column ``turns`` (``json``), the list of
  ``{'input_ids', 'labels'}`` turns.

Examples whose tokens before the final response already fill ``--max_seq_len`` are dropped, as
the loader would drop them (with its default ``target_prompts: none``, nothing of them could be
learned); longer examples that still fit a target are kept whole and counted, and the loader
truncates them to its own ``max_seq_len``. Bad rows (missing or non-string fields, an empty
response, invalid JSON or UTF-8) fail the conversion with the row named, unless
``--skip_bad_rows`` is given; then they are skipped and counted by reason in the summary.

``--out_root`` may be an ``s3://``, ``gs://`` or ``oci://`` URI: each split is written to a
local folder (``--local/<split>``, or a temporary one) and uploaded once it is complete, shards
first and ``index.json`` last, so a failed conversion never leaves a remote split that looks
finished. Each remote split folder must be empty.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.data_prep.convert_dataset_hf import (
    iter_rows,
    iter_split_samples,
    load_splits,
    parse_tokenizer_kwargs,
    split_place,
    worker_count,
)
from llmfoundry.command_utils.data_prep.convert_dataset_json import (
    JSON_SUFFIXES,
    iter_json_rows,
)
from llmfoundry.data.data import (
    BadRowError,
    MDSWriteSummary,
    RowStats,
    check_compression,
    check_output_empty,
    write_mds,
)
from llmfoundry.data.finetuning.collator import TargetPolicy, example_length, is_trainable
from llmfoundry.data.finetuning.dataloader import preprocess_row
from llmfoundry.data.finetuning.formatting import MESSAGES_KEYS, tokenize_example
from llmfoundry.data.finetuning.tasks import PreprocessingFn, dataset_constructor
from llmfoundry.utils.exceptions import ConfigError, DatasetError, did_you_mean
from llmfoundry.utils.object_store import RemoteFolder, check_listable, is_remote
from llmfoundry.utils.tokenizer_utils import build_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_SPLITS = ("train", "validation")
SINGLE_TURN_COLUMNS = {"input_ids": "ndarray:int32", "labels": "ndarray:int32"}
TURNS_COLUMNS = {"turns": "json"}
PROMPT_TOO_LONG = "prompt fills max_seq_len"
EXPECTED_ROW = "'prompt'/'response' or 'messages'"
# The loader's default targets, which decide which examples could teach nothing.
DEFAULT_POLICY = TargetPolicy()

LocatedRow = tuple[str, Mapping[str, Any]]  # (where the row is, for messages; the row)


@dataclass(frozen=True)
class FinetuningSamples:
    """Turns rows into tokenized finetuning samples (a ``RowConverter`` for worker processes).

    Attributes:
        hf_split: the split's name, for messages.
        preprocess: the preprocessing function, or None to use the rows as they are.
        tokenizer: the tokenizer.
        max_seq_len: examples whose prompt fills this many tokens are dropped.
        multi_turn: write the ``turns`` column (chats) instead of ``input_ids``/``labels``.
        skip_bad_rows: count and skip bad rows instead of failing on the first.
    """

    hf_split: str
    preprocess: PreprocessingFn | None
    tokenizer: PreTrainedTokenizerBase
    max_seq_len: int
    multi_turn: bool
    skip_bad_rows: bool

    def samples(
        self, rows: Iterable[Mapping[str, Any]], stats: RowStats, worker: int | None
    ) -> Iterator[dict[str, Any]]:
        """The samples of a Hugging Face split's rows (numbered from 1 in messages)."""
        place = split_place(self.hf_split, worker)
        located = ((f"{place} row {n}", row) for n, row in iter_rows(rows, place, stats))
        return self.samples_of_located_rows(located, stats)

    def samples_of_located_rows(
        self, rows: Iterable[LocatedRow], stats: RowStats
    ) -> Iterator[dict[str, Any]]:
        """The samples of ``(where, row)`` pairs, counting drops in ``stats``.

        Raises:
            BadRowError: naming where the row is, unless ``stats`` skips bad rows.
        """
        for where, row in rows:
            try:
                turns = self.turns_of_row(row, where)
            except BadRowError as bad:
                stats.bad_row(bad)
                continue
            if not is_trainable(turns, DEFAULT_POLICY, self.max_seq_len):
                stats.dropped[PROMPT_TOO_LONG] += 1
                continue
            yield self.sample_of_turns(turns)

    def turns_of_row(self, row: Mapping[str, Any], where: str) -> list[dict[str, list[int]]]:
        """Preprocess and tokenize one row.

        Raises:
            BadRowError: if preprocessing fails or the example is malformed.
        """
        try:
            example = preprocess_row(self.preprocess, row, where)
        except DatasetError as err:
            raise BadRowError("preprocessing failed", str(err)) from err
        try:
            turns = tokenize_example(example, self.tokenizer, where)["turns"]
        except DatasetError as err:
            raise BadRowError("invalid example", str(err)) from err
        if len(turns) > 1 and not self.multi_turn:
            raise BadRowError(
                "multi-turn chat among prompt/response rows",
                f"{where}: a chat of {len(turns)} turns in a dataset whose first example is a "
                "prompt/response pair (written as single turns); convert chats separately",
            )
        return turns

    def sample_of_turns(self, turns: list[dict[str, list[int]]]) -> dict[str, Any]:
        """The MDS sample of a tokenized example, in this dataset's layout."""
        if self.multi_turn:
            return {"turns": turns}
        return {
            "input_ids": np.asarray(turns[0]["input_ids"], dtype=np.int32),
            "labels": np.asarray(turns[0]["labels"], dtype=np.int32),
        }


@dataclass(frozen=True)
class SplitSource:
    """Where a split's rows come from: local JSON-lines files or a streamed HF split."""

    name: str
    json_files: list[Path] | None = None
    hf_rows: Any = None  # a datasets.IterableDataset

    def located_rows(self, stats: RowStats) -> Iterator[LocatedRow]:
        """The rows with where they are (``file:line`` or ``split 'x' row n``)."""
        if self.json_files is not None:
            return iter_json_rows(self.json_files, stats, f"{EXPECTED_ROW} fields")
        place = split_place(self.name, None)
        return ((f"{place} row {n}", row) for n, row in iter_rows(self.hf_rows, place, stats))


def convert_finetuning_dataset(
    dataset: str,
    out_root: str,
    tokenizer: str | None,
    data_subset: str | None = None,
    splits: list[str] | None = None,
    preprocessor: str | None = None,
    skip_preprocessing: bool = False,
    local: str | None = None,
    compression: str | None = None,
    num_workers: int | None = None,
    tokenizer_kwargs: str | Mapping[str, Any] | None = None,
    max_seq_len: int = 2048,
    data_files: list[str] | None = None,
    skip_bad_rows: bool = False,
) -> dict[str, MDSWriteSummary]:
    """Convert the splits of a finetuning dataset to MDS folders ``out_root/<split>``.

    Args:
        dataset: a Hub name, a local dataset folder, a JSON-lines file or folder of
            ``<split>.jsonl`` files, or a builder name (``json``) with ``data_files``.
        out_root: the output folder; each split goes to its own (empty) sub-folder.
        tokenizer: the tokenizer folder or hub name (required).
        data_subset: the dataset's subset (config), if it has several.
        splits: the splits to convert; each must exist. By default ``train`` and
            ``validation``, skipping (with a warning) the ones the dataset lacks.
        preprocessor: the preprocessing function, ``package.module:function`` or a registered
            name; by default the one registered for ``dataset``, if any.
        skip_preprocessing: use the rows as they are (they hold ``prompt``/``response`` or
            ``messages``), even if a function is registered for ``dataset``.
        local: with a remote ``out_root``, the local folder the splits are written to before
            they are uploaded (default: a temporary folder, deleted afterwards).
        compression: shard compression (``zstd``), or None/``"none"``.
        num_workers: DataLoader worker processes reading a Hugging Face dataset's shards;
            None uses the available CPUs (at most one per shard), 0 reads in this process.
            JSON-lines files are always read in this process.
        tokenizer_kwargs: keyword arguments for the tokenizer, as a JSON object string or a dict.
        max_seq_len: examples whose tokens before the final response fill this many are dropped.
        data_files: files for a builder name such as ``json`` (``load_dataset``'s data_files).
        skip_bad_rows: skip (and count) bad rows instead of failing on the first.

    Returns:
        What was read and written, by split (each also logged as a summary).

    Raises:
        ConfigError: on bad options, a requested split the dataset lacks (lists the ones it
            has), an unknown preprocessing function, or a non-empty output folder.
        DatasetError: on a bad row (names the file and line, or split and row), an unreadable
            dataset, or a split that yields no example.
        MissingFileError: if a local dataset path does not exist.
        TokenizerError: if the tokenizer cannot be loaded.
    """
    check_options(tokenizer, max_seq_len, num_workers, preprocessor, skip_preprocessing)
    assert tokenizer is not None  # checked
    compression = check_compression(compression)
    remote = is_remote(out_root)
    if remote:
        check_listable(out_root, "--out_root")
    preprocess = None if skip_preprocessing else resolve_preprocessor(preprocessor, dataset)
    sources = find_sources(dataset, data_subset, data_files, splits)
    with tempfile.TemporaryDirectory(prefix="convert_finetuning_") as staging:
        local_root = (local or staging) if remote else out_root
        targets = {s.name: split_target(out_root, local_root, s.name, remote) for s in sources}
        built = build_tokenizer(tokenizer, parse_tokenizer_kwargs(tokenizer_kwargs))
        multi_turn = first_example_is_chat(sources[0], preprocess)
        layout = (
            "chat turns (column 'turns')" if multi_turn else "prompt/response (input_ids/labels)"
        )
        logger.info("writing %s, tokenized with %s", layout, tokenizer)
        return {
            source.name: convert_split(
                source,
                FinetuningSamples(
                    source.name, preprocess, built, max_seq_len, multi_turn, skip_bad_rows
                ),
                local_root,
                compression,
                num_workers,
                targets[source.name],
            )
            for source in sources
        }


def split_target(out_root: str, local_root: str, split: str, remote: bool) -> RemoteFolder | None:
    """Check that a split's output folders are empty; its remote folder if ``out_root`` is one.

    Raises:
        ConfigError: if the local or remote folder holds files, or the bucket cannot be reached.
    """
    local_split = os.path.join(local_root, split)
    check_output_empty(local_split, "--local" if remote else "--out_root")
    if not remote:
        return None
    target = RemoteFolder(f"{out_root.rstrip('/')}/{split}", "--out_root", local_split)
    if target.list_files():
        raise ConfigError(
            f"output folder '{target.uri}' is not empty; delete its objects or choose another "
            "--out_root"
        )
    return target


def check_options(
    tokenizer: str | None,
    max_seq_len: int,
    num_workers: int | None,
    preprocessor: str | None,
    skip_preprocessing: bool,
) -> None:
    """Fail on options that cannot work.

    Raises:
        ConfigError: naming the option.
    """
    if not tokenizer:
        raise ConfigError("--tokenizer is required: the examples are written tokenized")
    if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool) or max_seq_len <= 0:
        raise ConfigError(f"--max_seq_len must be a positive integer, got {max_seq_len!r}")
    if num_workers is not None and (
        not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0
    ):
        raise ConfigError(f"--num_workers must be 0 or more, got {num_workers!r}")
    if preprocessor is not None and skip_preprocessing:
        raise ConfigError("--preprocessor and --skip-preprocessing contradict; pass one of them")


def resolve_preprocessor(preprocessor: str | None, dataset: str) -> PreprocessingFn | None:
    """The preprocessing function: ``--preprocessor``, else the one registered for ``dataset``.

    Raises:
        ConfigError: if ``--preprocessor`` cannot be imported or is not registered.
    """
    function = dataset_constructor.resolve(preprocessor, dataset, "--preprocessor")
    if function is None:
        logger.info(
            "no preprocessing function for '%s': rows are used as they are (they need %s)",
            dataset,
            EXPECTED_ROW,
        )
    return function


def find_sources(
    dataset: str,
    subset: str | None,
    data_files: list[str] | None,
    splits: list[str] | None,
) -> list[SplitSource]:
    """The splits to convert and where their rows come from.

    Raises:
        ConfigError: if a requested split does not exist, or none of the default splits does.
        MissingFileError, DatasetError: if the dataset cannot be found or loaded.
    """
    available: Mapping[str, Any]
    json_splits = local_json_splits(dataset) if data_files is None else None
    if json_splits is not None:
        if subset is not None:
            logger.warning("--data_subset is ignored for JSON-lines files")
        available = json_splits
    else:
        available = load_splits(dataset, subset, data_files)
    wanted = list(splits) if splits else list(DEFAULT_SPLITS)
    found = [name for name in wanted if name in available]
    missing = [name for name in wanted if name not in available]
    if missing and (splits or not found):
        name = missing[0]
        raise ConfigError(
            f"--splits: dataset '{dataset}' has no split '{name}'{did_you_mean(name, available)}; "
            f"available: {', '.join(available)}"
        )
    for name in missing:
        logger.warning("dataset '%s' has no split '%s'; skipping it", dataset, name)
    if json_splits is not None:
        return [SplitSource(name, json_files=json_splits[name]) for name in found]
    return [SplitSource(name, hf_rows=available[name]) for name in found]


def local_json_splits(dataset: str) -> dict[str, list[Path]] | None:
    """The splits of local JSON-lines input, or None when ``dataset`` is something else.

    A ``.jsonl``/``.json`` file is the ``train`` split; a folder with such files at its top
    level has one split per file, named by the file's stem (``validation.jsonl``).
    """
    path = Path(dataset).expanduser()
    if path.is_file() and path.suffix in JSON_SUFFIXES:
        return {"train": [path]}
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in JSON_SUFFIXES)
        if files:
            return {p.stem: [p] for p in files}
    return None


def first_example_is_chat(source: SplitSource, preprocess: PreprocessingFn | None) -> bool:
    """Whether the dataset's first well-formed example is a chat (so it is written as turns).

    Rows that fail preprocessing are passed over here; the conversion reports them.
    """
    stats = RowStats(skip_bad_rows=True)
    for _, row in source.located_rows(stats):
        try:
            example = preprocess_row(preprocess, row, "the first row")
        except DatasetError:
            continue
        return any(key in example for key in MESSAGES_KEYS)
    return False


def convert_split(
    source: SplitSource,
    converter: FinetuningSamples,
    out_root: str,
    compression: str | None,
    num_workers: int | None,
    target: RemoteFolder | None = None,
) -> MDSWriteSummary:
    """Write one split to ``out_root/<split>``, then upload it to ``target`` if given.

    The upload sends the shards first and ``index.json`` last, so an interrupted upload never
    looks like a finished split.

    Returns:
        What was read and written.

    Raises:
        DatasetError: on a bad row, unreadable data, or when no example was written.
        ConfigError: if an upload fails.
    """
    out = os.path.join(out_root, source.name)
    stats = RowStats(converter.skip_bad_rows)
    if source.json_files is not None:
        samples = converter.samples_of_located_rows(source.located_rows(stats), stats)
    else:
        workers = worker_count(num_workers, source.hf_rows.num_shards)
        samples = iter_split_samples(source.hf_rows, converter, stats, workers)
    counts = TokenCounts(converter.max_seq_len)
    progress = tqdm(counts.count(samples), desc=source.name, unit=" examples")
    columns = TURNS_COLUMNS if converter.multi_turn else SINGLE_TURN_COLUMNS
    try:
        summary = write_mds(progress, out, columns, compression, stats)
    finally:
        progress.close()
    summary = replace(summary, num_tokens=counts.tokens)
    if summary.num_samples == 0:
        dropped = f" ({summary.describe_dropped()})" if summary.rows_dropped else ""
        raise DatasetError(
            f"split '{source.name}': no examples were written to {out}{dropped}; check the "
            "rows, --preprocessor and --max_seq_len"
        )
    if target is not None:
        target.upload_local_files(last=lambda name: (name == "index.json",))
        summary = replace(summary, out=target.uri)
    logger.info(
        "split %s: %s; %d examples longer than max_seq_len=%d were kept whole (the loader "
        "truncates them)",
        source.name,
        summary.describe(),
        counts.long_examples,
        converter.max_seq_len,
    )
    return summary


class TokenCounts:
    """Counts the tokens of the samples passing through, and those longer than ``max_seq_len``."""

    def __init__(self, max_seq_len: int) -> None:
        self.max_seq_len = max_seq_len
        self.tokens = 0
        self.long_examples = 0

    def count(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Pass ``samples`` through, counting them."""
        for sample in samples:
            if "turns" in sample:
                length = example_length(sample["turns"])
            else:
                length = len(sample["input_ids"]) + len(sample["labels"])
            self.tokens += length
            self.long_examples += length > self.max_seq_len
            yield sample
