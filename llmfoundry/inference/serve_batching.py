"""Batched generation for the endpoint: one worker thread owns the model and runs queued prompts.

The worker waits up to ``batch_wait_s`` for prompts to gather, then takes up to ``max_batch_size``
that can share a ``generate`` call and runs them as one left-padded batch. Greedy prompts from any
requests share a batch: each keeps its own ``max_tokens`` and stop strings (a stopping criterion
follows every row), and with left padding and the attention mask a prompt's greedy text does not
depend on its batch mates. Sampled prompts batch only with prompts of their own request, so a
request's ``seed`` reproduces its text. Streaming rows batch like the others: each new piece of
text is handed over as its tokens arrive, holding back whatever could still become a stop string.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from llmfoundry.inference.model_loading import context_length_of
from llmfoundry.inference.serve_logprobs import completion_logprobs, kept_completion_tokens
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.tokenizer_utils import eos_id_set, pad_token_id_of

logger = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = "the server is shutting down"


class QueueFullError(Exception):
    """The queue has no room for a request's rows (answered with 429); ``retry_after_s``: whole
    seconds after which the queue has likely drained."""

    def __init__(self, queued: int, limit: int, retry_after_s: int) -> None:
        super().__init__(f"{queued} prompts are waiting, the most this server queues is {limit}")
        self.retry_after_s = retry_after_s


class ShuttingDownError(RuntimeError):
    """The worker takes no more rows: the server is shutting down (answered with 503)."""


@dataclass
class ServedModel:
    """A loaded model, its tokenizer and what the endpoint needs to know about them.

    Attributes:
        model: the causal LM (eval mode).
        tokenizer: its tokenizer.
        context_length: most tokens (prompt plus completion) the model can attend to, or None
            when the config names no limit.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    context_length: int | None

    @classmethod
    def wrap(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> ServedModel:
        """A ``ServedModel`` for an already-loaded model, its context length read off its config."""
        return cls(model=model, tokenizer=tokenizer, context_length=context_length_of(model))


@dataclass
class RowResult:
    """What one prompt produced.

    Attributes:
        text: the completion (cut before a stop string).
        finish_reason: ``stop`` (end of text or a stop string) or ``length`` (``max_tokens``).
        completion_tokens: tokens the model generated for it.
        error: set (and the rest empty) when generation failed.
        shutdown: the row was dropped, not failed, because the server is shutting down.
        token_ids: the generated ids (EOS left out; a cut-off stop string's included).
        logprobs: the choice's ``logprobs`` object when the row asked for one
            (:mod:`~llmfoundry.inference.serve_logprobs`).
    """

    text: str = ""
    finish_reason: str = "length"
    completion_tokens: int = 0
    error: str | None = None
    shutdown: bool = False
    token_ids: list[int] = field(default_factory=list)
    logprobs: dict[str, Any] | None = None


@dataclass
class GenerationRow:
    """One prompt waiting for (or in) generation, and where its text goes.

    Attributes:
        prompt_ids: the prompt's token ids.
        max_tokens: the most tokens to generate.
        stop: strings that end the completion (not included in it).
        temperature: 0 for greedy decoding, else the sampling temperature.
        top_p: nucleus sampling mass (sampling only).
        seed: seeds the sampler before the row's batch runs (sampling only).
        group: rows of one request share it; sampled rows batch only within their group.
        on_done: called once, from the worker thread, with the row's result.
        on_text: called from the worker thread with each new piece of text (streaming), or None.
        cancelled: set when the caller has gone (timed out, disconnected): a queued row is
            dropped and a running one stops at its next token.
        logprobs: list this many alternatives per token in the result's ``logprobs`` (None:
            no log-probabilities).
        echo: the log-probabilities also cover the prompt's tokens.
        top_k: sample among this many likeliest tokens, 0 for all (sampling only).
    """

    prompt_ids: list[int]
    max_tokens: int
    stop: list[str]
    temperature: float
    top_p: float
    seed: int | None
    group: str
    on_done: Callable[[RowResult], None]
    on_text: Callable[[str], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    logprobs: int | None = None
    echo: bool = False
    top_k: int = 0

    @property
    def batch_key(self) -> Hashable:
        """Rows with equal keys may share a ``generate`` call."""
        return ("greedy",) if self.temperature == 0 else ("sampled", self.group)


class _RowProgress:
    """A row's tokens so far, its text, and the text already handed to a streaming caller."""

    def __init__(self, row: GenerationRow) -> None:
        self.row, self.tokens, self.emitted = row, list[int](), ""
        self.result: RowResult | None = None


class _BatchProgress(StoppingCriteria):
    """Follows every row of a batch as ``generate`` appends tokens.

    Called after each new token, it ends each row on its own terms (end-of-text, a stop string,
    its own ``max_tokens``, or a cancelled request) and streams new text to streaming rows.
    """

    def __init__(
        self,
        rows: Sequence[GenerationRow],
        tokenizer: PreTrainedTokenizerBase,
        eos_ids: set[int],
    ) -> None:
        self.rows = [_RowProgress(row) for row in rows]
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids

    def decode(self, tokens: list[int]) -> str:
        """Text of generated tokens (special tokens dropped, as a caller would decode them)."""
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def __call__(
        self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any
    ) -> torch.BoolTensor:
        """Advance every unfinished row by its newest token; True where a row is finished."""
        del scores, kwargs
        newest = input_ids[:, -1].tolist()
        done = []
        for progress, token in zip(self.rows, newest, strict=True):
            if progress.result is None:
                self._advance(progress, int(token))
            done.append(progress.result is not None)
        return cast(torch.BoolTensor, torch.tensor(done, device=input_ids.device))

    def _advance(self, progress: _RowProgress, token: int) -> None:
        row = progress.row
        if token in self.eos_ids:
            self._finish(progress, self.decode(progress.tokens), "stop", extra_tokens=1)
            return
        progress.tokens.append(token)
        if row.cancelled.is_set():
            self._finish(progress, "", "cancelled")
            return
        if not row.stop and row.on_text is None:
            if len(progress.tokens) >= row.max_tokens:
                self._finish(progress, self.decode(progress.tokens), "length")
            return
        text = self.decode(progress.tokens)
        cut = first_stop(text, row.stop)
        if cut is not None:
            self._finish(progress, text[:cut], "stop")
        elif len(progress.tokens) >= row.max_tokens:
            self._finish(progress, text, "length")
        elif row.on_text is not None:
            safe = text[: len(text) - held_back_chars(text, row.stop)]
            if len(safe) > len(progress.emitted) and safe.startswith(progress.emitted):
                row.on_text(safe[len(progress.emitted) :])
                progress.emitted = safe

    def _finish(
        self, progress: _RowProgress, text: str, reason: str, extra_tokens: int = 0
    ) -> None:
        row = progress.row
        if row.on_text is not None and reason != "cancelled":
            if not text.startswith(progress.emitted):
                logger.warning("streamed text is not a prefix of the final text; sending the rest")
            rest = text[len(progress.emitted) :]
            if rest:
                row.on_text(rest)
        progress.result = RowResult(
            text=text,
            finish_reason=reason,
            completion_tokens=len(progress.tokens) + extra_tokens,
            token_ids=list(progress.tokens),
        )

    def finish_all(self) -> list[RowResult]:
        """End rows that ``generate`` stopped without a reason of their own; all results."""
        for progress in self.rows:
            if progress.result is None:
                self._finish(progress, self.decode(progress.tokens), "length")
        return [cast(RowResult, progress.result) for progress in self.rows]


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    found = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    return min(found) if found else None


def held_back_chars(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of ``text`` a stream must hold back for now.

    These are an unfinished multi-byte character (decoded as U+FFFD) and the longest ending that
    is the start of a stop string (it may become the stop string with the next token).
    """
    body = text.rstrip("\ufffd")
    partial = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(body)), partial, -1):
            if body.endswith(stop[:size]):
                partial = size
                break
    return len(text) - len(body) + partial


class GenerationWorker:
    """The thread that owns the model: it gathers queued rows into batches and generates.

    Args:
        served: the model and tokenizer.
        max_batch_size: most rows per ``generate`` call.
        batch_wait_s: how long to wait for more rows once one has arrived.
        max_queue: most rows that may wait to be batched; None: no bound.
    """

    def __init__(
        self,
        served: ServedModel,
        max_batch_size: int,
        batch_wait_s: float,
        max_queue: int | None = None,
    ) -> None:
        self.served = served
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.max_queue = max_queue
        self.generate_calls = 0
        self._queue: deque[GenerationRow] = deque()
        self._condition = threading.Condition()
        self._paused = False
        self._stopping = False
        self.draining = False  # no new rows: the server is shutting down
        self._batch_seconds = 0.0
        self._thread = threading.Thread(target=self._loop, name="generation-worker", daemon=True)
        tokenizer = served.tokenizer
        self._eos_ids = _eos_ids(served.model, tokenizer)
        self._pad_id = pad_token_id_of(tokenizer, eos_ids=self._eos_ids)

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def drain(self) -> None:
        """Take no more rows (:meth:`submit` raises :class:`ShuttingDownError`) and end the
        queued ones with a shutdown result; the running batch finishes."""
        with self._condition:
            self.draining = True
            left = list(self._queue)
            self._queue.clear()
        for row in left:
            row.on_done(RowResult(error=SHUTDOWN_MESSAGE, shutdown=True))

    def stop(self) -> None:
        """Drain, then stop the thread once the running batch is done."""
        self.drain()
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread.is_alive()

    def submit(self, rows: Sequence[GenerationRow]) -> None:
        """Queue ``rows`` (one request's prompts, kept in order), all or none.

        Raises:
            ShuttingDownError: once the worker is draining or stopped.
            QueueFullError: if the rows would take the queue past ``max_queue``.
        """
        with self._condition:
            if self.draining:
                raise ShuttingDownError(SHUTDOWN_MESSAGE)
            queued = len(self._queue)
            if self.max_queue is not None and queued + len(rows) > self.max_queue:
                # Retry once the queued batches have likely run: 1 to 60 s.
                wait = math.ceil(math.ceil(queued / self.max_batch_size) * self._batch_seconds)
                raise QueueFullError(queued, self.max_queue, min(60, max(1, wait)))
            self._queue.extend(rows)
            self._condition.notify_all()

    def pending(self) -> int:
        """Rows queued and not yet taken into a batch."""
        with self._condition:
            return len(self._queue)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold batches back while inside (rows still queue up): for tests and maintenance."""
        with self._condition:
            self._paused = True
        try:
            yield
        finally:
            with self._condition:
                self._paused = False
                self._condition.notify_all()

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run_guarded(batch)

    def _next_batch(self) -> list[GenerationRow] | None:
        """Wait for rows, let a batch gather, and take it; None once stopping."""
        with self._condition:
            while not self._stopping and (self._paused or not self._queue):
                self._condition.wait()
            if self._stopping:
                return None
            deadline = time.monotonic() + self.batch_wait_s
            while len(self._queue) < self.max_batch_size and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            if self._stopping:
                return None
            return self._take_batch()

    def _take_batch(self) -> list[GenerationRow]:
        """Remove and return the oldest row and the queued rows that may join it (lock held)."""
        for row in [r for r in self._queue if r.cancelled.is_set()]:
            self._queue.remove(row)
        if not self._queue:
            return []
        context = self.served.context_length
        first = self._queue[0]
        batch = [first]
        longest_prompt, most_tokens = len(first.prompt_ids), first.max_tokens
        for row in list(self._queue)[1:]:
            if len(batch) == self.max_batch_size:
                break
            if row.batch_key != first.batch_key:
                continue
            prompt, tokens = (
                max(longest_prompt, len(row.prompt_ids)),
                max(most_tokens, row.max_tokens),
            )
            # Left padding makes every row as long as the longest prompt: the padded batch
            # must still fit the context (each row alone was checked to fit).
            if context is not None and prompt + tokens > context:
                continue
            batch.append(row)
            longest_prompt, most_tokens = prompt, tokens
        for row in batch:
            self._queue.remove(row)
        return batch

    def _run_guarded(self, batch: list[GenerationRow]) -> None:
        try:
            results = self._run(batch)
        except Exception as err:  # one failed batch must not take the server down
            logger.exception("generation failed for a batch of %d prompts", len(batch))
            results = [RowResult(error=f"generation failed: {type(err).__name__}: {err}")] * len(
                batch
            )
        for row, result in zip(batch, results, strict=True):
            try:
                row.on_done(result)
            except Exception:
                logger.exception("could not hand a result back to its request")

    @torch.no_grad()
    def _run(self, batch: list[GenerationRow]) -> list[RowResult]:
        """One left-padded ``generate`` call for ``batch``; the result of each row."""
        model, tokenizer = self.served.model, self.served.tokenizer
        longest = max(len(row.prompt_ids) for row in batch)
        input_ids = torch.full((len(batch), longest), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for index, row in enumerate(batch):
            input_ids[index, longest - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            attention_mask[index, longest - len(row.prompt_ids) :] = 1
        progress = _BatchProgress(batch, tokenizer, self._eos_ids)
        first = batch[0]
        sampling = first.temperature > 0
        if sampling and first.seed is not None:
            torch.manual_seed(first.seed)
        generation_config = GenerationConfig(
            max_new_tokens=max(row.max_tokens for row in batch),
            do_sample=sampling,
            num_beams=1,
            pad_token_id=self._pad_id,
            eos_token_id=sorted(self._eos_ids),
        )
        if sampling:
            # top_k 0 (OpenAI's sampling has none) turns off transformers' default of 50.
            generation_config.update(
                temperature=first.temperature, top_p=first.top_p, top_k=first.top_k
            )
        self.generate_calls += 1
        start = time.perf_counter()
        device = model.device
        cast(Any, model).generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=generation_config,
            stopping_criteria=StoppingCriteriaList([progress]),
        )
        results = progress.finish_all()
        for row, result in zip(batch, results, strict=True):
            if row.logprobs is not None and result.error is None:
                completion = kept_completion_tokens(tokenizer, result.token_ids, result.text)
                result.logprobs = completion_logprobs(
                    model, tokenizer, row.prompt_ids, completion, row.logprobs, row.echo
                )
        tokens = sum(result.completion_tokens for result in results)
        elapsed = time.perf_counter() - start
        with self._condition:  # a moving average, for Retry-After
            self._batch_seconds += (elapsed - self._batch_seconds) * 0.2
        logger.debug(
            "batch of %d: %d tokens in %.2fs (%.1f tokens/s)",
            len(batch),
            tokens,
            elapsed,
            tokens / max(elapsed, 1e-9),
        )
        return results


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Token ids that end a completion: the tokenizer's and the generation config's."""
    generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = eos_id_set(tokenizer.eos_token_id) | eos_id_set(generation_eos)
    if not ids:
        raise ConfigError("the tokenizer has no end-of-text token (eos_token); set one to serve it")
    return ids
