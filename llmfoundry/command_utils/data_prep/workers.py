"""Order-preserving worker processes for the converters.

The converters read their input in this process, hand the expensive part (tokenizing batches of
documents, preprocessing and tokenizing finetuning rows) to worker processes, and take the
results back in input order, so the output is the same for every worker count. A few tasks per
worker are in flight at a time, so memory stays bounded whatever the input size.

The workers are forked once the converter's state (tokenizer, preprocessing function) is built,
so they inherit it instead of loading it again, and nothing has to be pickled but the tasks and
their results. Each worker tokenizes on one thread (``TOKENIZERS_PARALLELISM=false`` in the
worker), so ``N`` workers keep ``N`` cores busy.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.data import (
    TEXT_COLUMNS,
    TOKENS_COLUMNS,
    ConcatTokens,
    Document,
    MDSWriteSummary,
    NoConcat,
    RowStats,
    write_mds,
)
from llmfoundry.data.token_batches import BatchEncoder, TokenIds, batch_encoder
from llmfoundry.utils.config_checks import NonNegativeInt, PositiveInt, check_value
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.tokenizer_utils import converter_tokenizer

logger = logging.getLogger(__name__)

StateT = TypeVar("StateT")
TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")

TASKS_IN_FLIGHT_PER_WORKER = 3


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def resolve_workers(requested: int | None, flag: str, minimum: int = 0) -> int:
    """The worker processes to use: ``requested``, or one per usable core when it is None.

    Args:
        requested: the option's value; 0 and 1 both mean "in this process".
        flag: the option's name, for the message.
        minimum: the smallest accepted value.

    Raises:
        ConfigError: if ``requested`` is not an integer of at least ``minimum``.
    """
    if requested is None:
        return usable_cpus()
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < minimum:
        raise ConfigError(
            f"{flag} must be an integer of at least {minimum}, got {requested!r} "
            "(leave it out to use one worker per CPU core)"
        )
    return requested


# A worker's function and state, inherited from the parent when it forks.
_worker_function: Callable[[Any, Any], Any] | None = None
_worker_state: Any = None


def check_sample_options(
    concat_tokens: int | None,
    tokenizer: str | None,
    bos_text: str | None,
    eos_text: str | None,
    num_workers: int | None,
) -> None:
    """The sample options of the text converters: fail on options that cannot work together
    and warn about ignored ones.

    Raises:
        ConfigError: naming the option.
    """
    if concat_tokens is None:
        if tokenizer is not None or bos_text or eos_text:
            logger.warning(
                "--tokenizer/--bos_text/--eos_text are ignored without --concat_tokens: "
                "writing text samples"
            )
    else:
        check_value(concat_tokens, PositiveInt, "--concat_tokens")
        if tokenizer is None:
            raise ConfigError("--concat_tokens needs --tokenizer to tokenize the documents with")
    if num_workers is not None:  # None: one per usable CPU
        check_value(num_workers, NonNegativeInt, "--num_workers")


def chunked(items: Iterable[TaskT], size: int) -> Iterator[list[TaskT]]:
    """``items`` in lists of ``size`` (the last may be shorter).

    When reading ``items`` fails, the list read so far is yielded before the error is raised
    (so that the rows before a bad one are processed as they would be one at a time).
    """
    chunk: list[TaskT] = []
    iterator = iter(items)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            break
        except Exception:
            if chunk:
                yield chunk
            raise
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _start_worker(function: Callable[[Any, Any], Any], state: Any) -> None:
    global _worker_function, _worker_state
    # One thread per worker; the pool's size is the parallelism.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # A worker is ended by its pool, never by a SIGTERM handler inherited from the parent
    # (Composer installs one).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_function, _worker_state = function, state


def _run_task(task: Any) -> Any:
    assert _worker_function is not None
    return _worker_function(_worker_state, task)


class OrderedPool(Generic[StateT, TaskT, ResultT]):
    """Applies ``function(state, task)`` to a stream of tasks, in worker processes when
    ``workers > 1``, and yields the results in task order.

    Use it as a context manager: entering starts (forks) the workers, leaving waits for the
    tasks in flight and stops them. With one worker (or where processes cannot be forked) the
    tasks run in this process, one at a time.

    Args:
        function: the work; a module-level function or any callable (it is inherited, not
            pickled); its exceptions reach the caller of :meth:`map`.
        state: its first argument (a tokenizer, a converter), inherited by the workers.
        workers: the number of worker processes.
    """

    def __init__(
        self, function: Callable[[StateT, TaskT], ResultT], state: StateT, workers: int
    ) -> None:
        self.function = function
        self.state = state
        forkable = "fork" in multiprocessing.get_all_start_methods()
        self.workers = workers if workers > 1 and forkable else 1
        self.executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> OrderedPool[StateT, TaskT, ResultT]:
        if self.workers > 1:
            self.executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_start_worker,
                initargs=(self.function, self.state),
            )
            # The first task forks every worker now, before this process starts reading.
            self.executor.submit(int).result()
            logger.debug("started %d worker processes", self.workers)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    def map(self, tasks: Iterable[TaskT]) -> Iterator[ResultT]:
        """The results of ``tasks``, in order.

        When reading ``tasks`` raises, the results of the tasks read before are yielded first,
        then the error is raised, as if the tasks had run one at a time.

        Raises:
            Whatever reading ``tasks`` or running one raises.
        """
        if self.executor is None:
            for task in tasks:
                yield self.function(self.state, task)
            return
        pending: deque[Future[ResultT]] = deque()
        iterator = iter(tasks)
        error: Exception | None = None
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.workers * TASKS_IN_FLIGHT_PER_WORKER:
                try:
                    task = next(iterator)
                except StopIteration:
                    exhausted = True
                except Exception as err:  # raised once the earlier tasks are done
                    error, exhausted = err, True
                else:
                    pending.append(self.executor.submit(_run_task, task))
            if not pending:
                break
            yield pending.popleft().result()
        if error is not None:
            raise error


TokenizerPool = OrderedPool[BatchEncoder, list[str], list[TokenIds]]


def token_batches_in(
    pool: TokenizerPool, progress: tqdm
) -> Callable[[Iterable[list[str]]], Iterator[list[TokenIds]]]:
    """A ``tokenize_batches`` for :class:`~llmfoundry.data.data.ConcatTokens` that
    tokenizes in ``pool`` and counts documents and tokens on ``progress`` (a bar of tokens).
    """

    def tokenize_batches(batches: Iterable[list[str]]) -> Iterator[list[TokenIds]]:
        documents = 0
        for token_ids in pool.map(batches):
            documents += len(token_ids)
            progress.update(sum(len(ids) for ids in token_ids))
            progress.set_postfix(docs=f"{documents:,}", refresh=False)
            yield token_ids

    return tokenize_batches


@dataclass(frozen=True)
class Concatenation:
    """How the converters turn documents into samples of ``max_length`` tokens (the settings
    of :class:`~llmfoundry.data.data.ConcatTokens`)."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    bos_text: str = ""
    eos_text: str = ""
    no_wrap: bool = False

    def samples(
        self, documents: Iterable[Document], pool: TokenizerPool, progress: tqdm
    ) -> ConcatTokens:
        """The documents' samples, tokenized in ``pool``, counted on ``progress``."""
        return ConcatTokens(
            documents,
            self.tokenizer,
            self.max_length,
            self.bos_text,
            self.eos_text,
            self.no_wrap,
            tokenize_batches=token_batches_in(pool, progress),
        )


def _encode(encode: BatchEncoder, texts: list[str]) -> list[TokenIds]:
    return encode(texts)


def tokenizer_pool(tokenizer: PreTrainedTokenizerBase, workers: int) -> TokenizerPool:
    """A pool that tokenizes batches of texts with ``tokenizer`` (see
    :func:`~llmfoundry.data.token_batches.batch_encoder`)."""
    return OrderedPool(_encode, batch_encoder(tokenizer), workers)


def token_progress(desc: str) -> tqdm:
    """A progress bar counting tokens (on stderr; it shows tokens per second)."""
    return tqdm(desc=desc, unit=" tok", unit_scale=True, smoothing=0.1)


def concatenation_for(
    concat_tokens: int | None,
    tokenizer: str | None,
    bos_text: str | None,
    eos_text: str | None,
    no_wrap: bool,
    tokenizer_kwargs: Mapping[str, Any] | None = None,
) -> Concatenation | None:
    """The converters' ``--concat_tokens`` settings with the tokenizer loaded, or None when
    the samples are untokenized text (no ``concat_tokens`` or no tokenizer)."""
    if not (concat_tokens and tokenizer):
        return None
    built = converter_tokenizer(tokenizer, tokenizer_kwargs)
    return Concatenation(built, concat_tokens, bos_text or "", eos_text or "", no_wrap)


Tokenizing = tuple[Concatenation, TokenizerPool]
"""How :func:`write_documents` tokenizes: the settings and the pool that runs them."""


@contextlib.contextmanager
def tokenizing_in_workers(
    concatenation: Concatenation | None, workers: int
) -> Iterator[Tokenizing | None]:
    """A running tokenizer pool of ``workers`` processes for ``concatenation`` (None, and no
    pool, for untokenized text samples); the pool stops on leaving."""
    if concatenation is None:
        yield None
        return
    with tokenizer_pool(concatenation.tokenizer, workers) as pool:
        yield concatenation, pool


def write_documents(
    documents: Iterable[Document],
    out: str,
    compression: str | None,
    rows: RowStats,
    label: str,
    tokenizing: Tokenizing | None,
    total: int | None = None,
    max_samples: int | None = None,
) -> MDSWriteSummary:
    """Write ``documents`` to the new MDS folder ``out`` with a progress bar named ``label``.

    Without ``tokenizing`` each document is one ``text`` sample (the bar counts samples out of
    ``total``); with it the documents are tokenized in its pool and cut into ``tokens``
    samples (the bar counts tokens). ``max_samples`` stops after that many samples.
    """
    samples: Iterable[Mapping[str, Any]]
    if tokenizing is None:
        progress = tqdm(desc=label, total=total, unit=" samples")
        samples = _counted(NoConcat(documents), progress)
        columns = TEXT_COLUMNS
    else:
        concatenation, pool = tokenizing
        progress = token_progress(label)
        samples = concatenation.samples(documents, pool, progress)
        columns = TOKENS_COLUMNS
    if max_samples is not None:
        samples = itertools.islice(samples, max_samples)
    try:
        return write_mds(samples, out, columns, compression, rows)
    finally:
        progress.close()


def _counted(samples: Iterable[dict[str, Any]], progress: tqdm) -> Iterator[dict[str, Any]]:
    """Pass ``samples`` through, advancing ``progress`` by one for each."""
    for sample in samples:
        progress.update(1)
        yield sample
