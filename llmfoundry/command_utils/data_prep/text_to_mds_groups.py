"""The worker side of ``convert_text_to_mds``: files split into contiguous groups, each tokenized
and written to its own MDS folder (in worker processes when there are several), then merged."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streaming.base.util import merge_index
from tqdm import tqdm

from llmfoundry.data.data import (
    TOKENS_COLUMNS,
    ConcatTokensDataset,
    MDSWriteSummary,
    RowStats,
    folder_size,
    write_mds,
)
from llmfoundry.utils.exceptions import DatasetError
from llmfoundry.utils.tokenizer_utils import build_tokenizer

if TYPE_CHECKING:
    from llmfoundry.command_utils.data_prep.convert_text_to_mds import InputFile

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupTask:
    """One worker's share of a conversion: its files and where it writes them."""

    files: list[str]
    out: str
    tokenizer_name: str
    concat_tokens: int
    bos_text: str
    eos_text: str
    no_wrap: bool
    compression: str | None
    labels: list[str] | None = None  # how messages name ``files`` (default: their paths)
    trust_remote_code: bool = False  # let the tokenizer run the code its folder ships


def group_tasks(
    files: list[InputFile], output_folder: str, processes: int, **options: Any
) -> list[GroupTask]:
    """Split ``files`` into at most ``processes`` contiguous groups, one task each.

    A single group writes straight into ``output_folder``; several write to ``<output_folder>/<i>``.

    Args:
        files: the input files, in order.
        output_folder: the output folder.
        processes: the most groups to make.
        **options: the other :class:`GroupTask` fields.

    Returns:
        The tasks.
    """
    per_group = math.ceil(len(files) / min(processes, len(files)))
    groups = [files[start : start + per_group] for start in range(0, len(files), per_group)]
    return [
        GroupTask(
            files=[f.local for f in group],
            labels=[f.label for f in group],
            out=output_folder if len(groups) == 1 else os.path.join(output_folder, str(index)),
            **options,
        )
        for index, group in enumerate(groups)
    ]


def run_tasks(tasks: list[GroupTask], num_files: int, output_folder: str) -> MDSWriteSummary:
    """Run the group tasks (in worker processes when there are several) with a progress bar.

    Returns:
        The combined summary; several groups' indexes are merged into ``output_folder``.
    """
    with tqdm(total=num_files, desc="files", unit=" files") as bar:
        if len(tasks) == 1:
            summaries = [convert_group(tasks[0], lambda: bar.update(1))]
        else:
            summaries = run_in_workers(tasks, bar)
    if len(tasks) > 1:
        merge_group_indexes([task.out for task in tasks], output_folder)
    total = MDSWriteSummary(0, 0, output_folder)
    for summary in summaries:
        total = total.merged_with(summary, output_folder)
    return replace(total, bytes_on_disk=folder_size(output_folder))


def merge_group_indexes(group_folders: list[str], output_folder: str) -> None:
    """Write ``output_folder/index.json`` covering the shards of every group folder."""
    # merge_index warns about its temporary folder and the existing output folder, both
    # expected here; keep those two lines out of the user's log.
    previous_disable = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        merge_index([os.path.join(folder, "index.json") for folder in group_folders], output_folder)
    finally:
        logging.disable(previous_disable)


_files_done: Any = None  # a worker's shared counter of converted files, set by its initializer


def run_in_workers(tasks: list[GroupTask], bar: tqdm) -> list[MDSWriteSummary]:
    """Run each task in its own worker process, advancing ``bar`` as files are converted."""
    # The default start method (fork on Linux) lets workers reuse the parent's imports, which
    # take seconds (torch, transformers, streaming).
    context = multiprocessing.get_context()
    files_done = context.Value("q", 0)
    pool = context.Pool(len(tasks), initializer=_set_files_done, initargs=(files_done,))
    try:
        pending = pool.map_async(_convert_group_in_worker, tasks)
        while not pending.ready():
            pending.wait(0.2)
            bar.update(files_done.value - bar.n)
        summaries = pending.get()
        # Let the workers finish on their own (a sentinel each). Terminating them instead
        # sends SIGTERM, and a worker still starting up when it arrives can lose it: Composer
        # (imported here) installs a Python SIGTERM handler that forked workers inherit, and
        # CPython drops a signal caught between fork() and the child's after-fork reset; that
        # worker then waits forever and so does the join.
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    bar.update(files_done.value - bar.n)
    return summaries


def _set_files_done(counter: Any) -> None:
    global _files_done
    # A worker is ended by its pool, never by Composer's inherited SIGTERM handler.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _files_done = counter


def _count_file_done() -> None:
    with _files_done.get_lock():
        _files_done.value += 1


def _convert_group_in_worker(task: GroupTask) -> MDSWriteSummary:
    return convert_group(task, _count_file_done)


def convert_group(task: GroupTask, on_file_done: Callable[[], object]) -> MDSWriteSummary:
    """Convert one group's files into its MDS folder.

    Args:
        task: the files, the output folder and the conversion options.
        on_file_done: called after each file has been read.

    Returns:
        What this group wrote.
    """
    tokenizer = build_tokenizer(task.tokenizer_name, {"trust_remote_code": task.trust_remote_code})
    rows = RowStats()
    documents = read_documents(task.files, on_file_done, rows, task.labels)
    samples = ConcatTokensDataset(
        documents, tokenizer, task.concat_tokens, task.bos_text, task.eos_text, task.no_wrap
    )
    return write_mds(samples, task.out, TOKENS_COLUMNS, task.compression, rows)


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
