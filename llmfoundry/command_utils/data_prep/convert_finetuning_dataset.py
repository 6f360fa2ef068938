"""Convert finetuning examples (prompt/response pairs or chats) to MDS, one folder per split.

The rows come from a Hugging Face dataset (a Hub name, a local dataset folder, or a builder
such as ``json`` with ``data_files``) or from local JSON-lines files: ``--dataset rows.jsonl``
is a single ``train`` split, and a folder holding ``<split>.jsonl`` (or ``.json``) files has one
split per file. JSON-lines rows are read here, line by line, so a bad row is named by file and
line; other sources are streamed by ``datasets`` (optionally in DataLoader worker processes).

Each row goes through the preprocessing function (``--preprocessor``, else the one registered
for the dataset's name in :data:`~llmfoundry.data.finetuning.dataset_constructor`, else none)
and must then hold ``prompt``/``response`` strings or a ``messages`` chat. The output is LLM
Foundry 0.22's layout, which the ``finetuning`` loader (ours or LLM Foundry's) reads:

* with ``--tokenizer``: column ``turns`` (``json``), the list of ``{'input_ids', 'labels'}``
  turns of each example, tokenized exactly as the loader tokenizes examples it reads from a
  Hugging Face dataset (one turn per prompt/response pair, one per assistant message of a chat);
* without: the text, columns ``prompt`` and ``response`` (``str``), or ``messages`` (``json``)
  when the first example is a chat; the loader tokenizes it when it reads it.

When tokenizing, examples left with no loss target within ``--max_seq_len`` are dropped, as
the loader would drop them under the targets ``--target_prompts`` (``none``, ``all`` or
``length>=N``) and ``--target_responses`` (``last`` or ``all``) name: with the defaults, those
whose tokens before the final response fill ``--max_seq_len``; with ``--target_prompts all`` a
long prompt is itself a target and the example is kept. ``--encoder_decoder`` (data for an
encoder-decoder model, whose encoder input is cut instead) keeps every example and requires
the default targets. Longer examples that are kept are written whole and counted; the loader
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
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llmfoundry.command_utils.data_prep.finetuning_samples import (
    FinetuningSamples,
    LocatedRow,
    LocatedRowOrError,
    RowResult,
    TokenCounts,
    convert_chunk,
    samples_of_results,
)
from llmfoundry.command_utils.data_prep.hf_rows import (
    iter_rows,
    load_splits,
    parse_tokenizer_kwargs,
    split_place,
)
from llmfoundry.command_utils.data_prep.hf_splits import no_split_error
from llmfoundry.command_utils.data_prep.json_rows import (
    JSON_SUFFIXES,
    iter_json_rows,
    iter_json_rows_or_errors,
)
from llmfoundry.command_utils.data_prep.workers import OrderedPool, chunked, resolve_workers
from llmfoundry.data.data import (
    BadRowError,
    MDSWriteSummary,
    RowStats,
    check_compression,
    check_output_empty,
    write_mds,
)
from llmfoundry.data.finetuning.formatting import MESSAGES_KEYS
from llmfoundry.data.finetuning.hf_source import preprocess_row
from llmfoundry.data.finetuning.tasks import PreprocessingFn, dataset_constructor
from llmfoundry.data.finetuning.turns import TargetPolicy
from llmfoundry.utils.config_checks import NonNegativeInt, PositiveInt, check_value
from llmfoundry.utils.exceptions import ConfigError, DatasetError
from llmfoundry.utils.file_utils import atomic_directory
from llmfoundry.utils.object_store import RemoteFolder, check_listable, is_remote
from llmfoundry.utils.tokenizer_utils import converter_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_SPLITS = ("train", "validation")
ROWS_PER_TASK = 256  # rows a worker process converts at a time
FinetuningPool = OrderedPool[FinetuningSamples, list[LocatedRowOrError], list[RowResult]]
EXPECTED_ROW = "'prompt'/'response' or 'messages'"


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
        return self.hf_located_rows(stats)

    def located_rows_or_errors(self, stats: RowStats) -> Iterator[LocatedRowOrError]:
        """Like :meth:`located_rows`, with a bad JSON line yielded as its error."""
        if self.json_files is not None:
            return iter_json_rows_or_errors(self.json_files, stats, f"{EXPECTED_ROW} fields")
        return self.hf_located_rows(stats)

    def hf_located_rows(self, stats: RowStats) -> Iterator[LocatedRow]:
        """The rows of a Hugging Face split, numbered from 1."""
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
    target_prompts: str = "none",
    target_responses: str = "last",
    encoder_decoder: bool = False,
) -> dict[str, MDSWriteSummary]:
    """Convert the splits of a finetuning dataset to MDS folders ``out_root/<split>``.

    Args:
        dataset: a Hub name, a local dataset folder, a JSON-lines file or folder of
            ``<split>.jsonl`` files, or a builder name (``json``) with ``data_files``.
        out_root: the output folder; each split goes to its own (empty) sub-folder.
        tokenizer: the tokenizer folder or hub name; None writes the examples as text.
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
        num_workers: worker processes preprocessing and tokenizing chunks of rows (the rows
            are read here, and the samples written here in row order, so the output is the
            same for any count); None uses one per usable CPU core, 0 or 1 converts here.
        tokenizer_kwargs: keyword arguments for the tokenizer, as a JSON object string or a dict.
        max_seq_len: tokenized examples with no target within this many tokens are dropped.
        data_files: files for a builder name such as ``json`` (``load_dataset``'s data_files).
        skip_bad_rows: skip (and count) bad rows instead of failing on the first.
        target_prompts: ``none``, ``all`` or ``length>=N``: which prompts count as targets
            when deciding which tokenized examples to keep.
        target_responses: ``last`` or ``all``: which responses count as targets.
        encoder_decoder: the data is for an encoder-decoder model: keep every example (its
            encoder input is cut, not dropped); needs the default targets.

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
    check_options(max_seq_len, num_workers, preprocessor, skip_preprocessing)
    policy = check_targets(target_prompts, target_responses, encoder_decoder)
    compression = check_compression(compression)
    remote = is_remote(out_root)
    if remote:
        check_listable(out_root, "--out_root")
    preprocess = None if skip_preprocessing else resolve_preprocessor(preprocessor, dataset)
    sources = find_sources(dataset, data_subset, data_files, splits)
    with tempfile.TemporaryDirectory(prefix="convert_finetuning_") as staging:
        local_root = (local or staging) if remote else out_root
        targets = {s.name: split_target(out_root, local_root, s.name, remote) for s in sources}
        converter = FinetuningSamples(
            "",
            preprocess,
            converter_tokenizer(tokenizer, parse_tokenizer_kwargs(tokenizer_kwargs))
            if tokenizer
            else None,
            max_seq_len,
            first_example_is_chat(sources[0], preprocess),
            skip_bad_rows,
            policy,
            encoder_decoder,
        )
        log_example_kind(converter, tokenizer)
        workers = resolve_workers(num_workers, "--num_workers")
        return convert_sources(
            sources, converter, workers, targets, out_root, local_root, compression
        )


def convert_sources(
    sources: list[SplitSource],
    converter: FinetuningSamples,
    workers: int,
    targets: Mapping[str, RemoteFolder | None],
    out_root: str,
    local_root: str,
    compression: str | None,
) -> dict[str, MDSWriteSummary]:
    """Convert each split with ``workers`` processes; a split with a remote target (from
    :func:`split_target`) is uploaded from ``local_root`` once written.

    Returns:
        What was read and written, by split.
    """
    remote = is_remote(out_root)
    summaries: dict[str, MDSWriteSummary] = {}
    with OrderedPool(convert_chunk, converter, workers) as pool:
        for source in sources:
            # A local split is written aside and renamed into place once whole: a killed
            # run leaves the splits it finished, and no half split.
            final = os.path.join(out_root, source.name)
            with nullcontext(None) if remote else atomic_directory(final) as split_stage:
                summaries[source.name] = convert_split(
                    source,
                    replace(converter, hf_split=source.name),
                    local_root,
                    compression,
                    pool,
                    targets[source.name],
                    None if split_stage is None else str(split_stage),
                )
    return summaries


def log_example_kind(converter: FinetuningSamples, tokenizer: str | None) -> None:
    """Say what the examples are written as: chats or prompt/response, tokenized or text."""
    logger.info(
        "writing %s examples (columns %s), %s",
        "chat" if converter.chats else "prompt/response",
        ", ".join(converter.columns),
        f"tokenized with {tokenizer}" if tokenizer else "as text",
    )


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
    max_seq_len: int,
    num_workers: int | None,
    preprocessor: str | None,
    skip_preprocessing: bool,
) -> None:
    """Fail on options that cannot work.

    Raises:
        ConfigError: naming the option.
    """
    check_value(max_seq_len, PositiveInt, "--max_seq_len")
    if num_workers is not None:  # None: one per usable CPU
        check_value(num_workers, NonNegativeInt, "--num_workers")
    if preprocessor is not None and skip_preprocessing:
        raise ConfigError("--preprocessor and --skip-preprocessing contradict; pass one of them")


def check_targets(
    target_prompts: str, target_responses: str, encoder_decoder: bool
) -> TargetPolicy:
    """The targets that decide which examples are kept (as the loader's ``dataset`` keys).

    Raises:
        ConfigError: on a bad value, or targets other than the defaults with
            ``--encoder_decoder``.
    """
    policy = TargetPolicy.from_config(target_prompts, target_responses, "--")
    if encoder_decoder and policy != TargetPolicy():
        raise ConfigError(
            "--encoder_decoder trains on the last response only; leave --target_prompts none "
            "and --target_responses last"
        )
    return policy


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
        raise no_split_error(dataset, missing[0], available)
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
    # Bad rows are passed over quietly here: the conversion reports them, in order.
    for _, row in source.located_rows_or_errors(RowStats()):
        if isinstance(row, BadRowError):
            continue
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
    pool: FinetuningPool,
    target: RemoteFolder | None = None,
    staging: str | None = None,
) -> MDSWriteSummary:
    """Write one split to ``out_root/<split>``, then upload it to ``target`` if given.

    With ``staging``, the split is written there instead (renamed to ``out_root/<split>`` by
    the caller); the summary names ``out_root/<split>``.

    The rows are read here, in order, converted in chunks by ``pool`` (in worker processes),
    and the samples written here in row order; bad rows are raised or counted in row order.

    The upload sends the shards first and ``index.json`` last, so an interrupted upload never
    looks like a finished split.

    Returns:
        What was read and written.

    Raises:
        DatasetError: on a bad row, unreadable data, or when no example was written.
        ConfigError: if an upload fails.
    """
    final = os.path.join(out_root, source.name)
    out = staging or final
    stats = RowStats(converter.skip_bad_rows)
    chunks = chunked(source.located_rows_or_errors(stats), ROWS_PER_TASK)
    samples = samples_of_results(pool.map(chunks), stats)
    counts = TokenCounts(converter.max_seq_len)
    progress = tqdm(counts.count(samples), desc=source.name, unit=" examples")
    columns = converter.columns
    try:
        summary = write_mds(progress, out, columns, compression, stats)
    finally:
        progress.close()
    summary = replace(summary, num_tokens=counts.tokens, out=final)
    if summary.num_samples == 0:
        # An index without shards would pass for a finished split (and block a rerun).
        shutil.rmtree(out, ignore_errors=True)
        dropped = f" ({summary.describe_dropped()})" if summary.rows_dropped else ""
        if summary.rows_read == 0:
            files = ", ".join(f"'{file}'" for file in source.json_files or [])
            raise DatasetError(
                f"split '{source.name}': no examples were written: {files or 'it'} has no rows; "
                f"add rows with {EXPECTED_ROW}"
            )
        raise DatasetError(
            f"split '{source.name}': no examples were written to {final}{dropped}; fix the rows, "
            "--preprocessor or --max_seq_len"
        )
    if target is not None:
        target.upload_local_files(last=lambda name: (name == "index.json",))
        summary = replace(summary, out=target.uri)
    if converter.tokenizer is None:
        logger.info("split %s: %s", source.name, summary.describe())
        return summary
    logger.info(
        "split %s: %s; %d examples longer than max_seq_len=%d were kept whole (the loader "
        "truncates them)",
        source.name,
        summary.describe(),
        counts.long_examples,
        converter.max_seq_len,
    )
    return summary
