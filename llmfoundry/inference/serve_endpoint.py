"""The endpoint's generation: validated requests run on the worker, whole or streamed.

Prompts go to a :class:`~llmfoundry.inference.serve_batching.GenerationWorker`; its results
come back to the request's event loop through an ``asyncio.Queue``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from llmfoundry.inference.serve_batching import (
    SHUTDOWN_MESSAGE,
    GenerationRow,
    GenerationWorker,
    QueueFullError,
    RowResult,
    ServedModel,
    ShuttingDownError,
)
from llmfoundry.inference.serve_config import ServeConfig
from llmfoundry.inference.serve_requests import APIError, SamplingRequest, invalid_param
from llmfoundry.inference.serve_responses import StreamShape

logger = logging.getLogger(__name__)

# ``(index, text)`` for streamed text and ``(index, RowResult)`` when a row ends.
Event: TypeAlias = tuple[int, str | RowResult]
# Seconds a client should wait before retrying on a server that is shutting down (a restarted
# one may be up by then).
SHUTDOWN_RETRY_AFTER_S = 5


@dataclass
class Prepared:
    """A validated generation request: its rows' prompts and settings."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    max_tokens: int
    sampling: SamplingRequest
    stops: list[str]
    logprobs: int | None = None
    echo: bool = False


def shutting_down() -> APIError:
    """The 503 answer while the server shuts down."""
    return APIError(
        503,
        SHUTDOWN_MESSAGE + "; retry later",
        code="shutting_down",
        error_type="server_error",
        headers={"Retry-After": str(SHUTDOWN_RETRY_AFTER_S)},
    )


def busy(err: QueueFullError) -> APIError:
    """The 429 answer when the queue is full."""
    return APIError(
        429,
        f"the server is busy ({err}); retry after {err.retry_after_s} s",
        code="server_busy",
        error_type="server_error",
        headers={"Retry-After": str(err.retry_after_s)},
    )


def _checked(result: RowResult) -> RowResult:
    """``result``, or a 503 if the server dropped it to shut down, or a 500 if it failed."""
    if result.shutdown:
        raise shutting_down()
    if result.error is not None:
        raise APIError(500, result.error, code="generation_failed", error_type="server_error")
    return result


def _sse_data(payload: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def usage(prepared: Prepared, results: Sequence[RowResult]) -> dict[str, int]:
    """OpenAI's ``usage``: the prompt, completion and total token counts of a request."""
    prompt_tokens = sum(len(ids) for ids in prepared.prompt_ids)
    completion_tokens = sum(result.completion_tokens for result in results)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class Endpoint:
    """The request handlers' shared state: the model, the worker and the settings."""

    def __init__(self, config: ServeConfig, served: ServedModel, worker: GenerationWorker) -> None:
        self.config = config
        self.served = served
        self.worker = worker
        self.name = config.served_name
        self.created = int(time.time())

    # -- validation against the model ---------------------------------------------------

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``."""
        encoded = self.served.tokenizer(text, add_special_tokens=add_special_tokens)
        return list(encoded["input_ids"])

    def prepare(
        self,
        prompts: list[str],
        sampling: SamplingRequest,
        default_max_tokens: int | None,
        max_tokens_field: str,
        prompt_field: str,
        extra_stops: Sequence[str] = (),
        add_special_tokens: bool = True,
    ) -> Prepared:
        """Tokenize and check the prompts against the context and the token limits.

        Raises:
            APIError: 400 for an empty prompt, or one that with ``max_tokens`` overflows.
        """
        context = self.served.context_length
        limit = self.config.max_new_tokens_limit
        prompt_ids = [self.tokenize(p, add_special_tokens) for p in prompts]
        longest = max(len(ids) for ids in prompt_ids)
        if min(len(ids) for ids in prompt_ids) == 0:
            raise invalid_param(
                prompt_field, f"'{prompt_field}' must not be empty (it has no tokens)"
            )
        if context is not None and longest >= context:
            raise invalid_param(
                prompt_field,
                f"the prompt is {longest} tokens; this model's context is {context} tokens, "
                "which must also leave room for at least one new token",
                "context_length_exceeded",
            )
        max_tokens = sampling.max_tokens
        if max_tokens is None:
            room = limit if context is None else min(limit, context - longest)
            max_tokens = room if default_max_tokens is None else default_max_tokens
        if max_tokens > limit:
            raise invalid_param(
                max_tokens_field,
                f"'{max_tokens_field}' is {max_tokens}; this server allows at most {limit}",
            )
        if context is not None and longest + max_tokens > context:
            raise invalid_param(
                max_tokens_field,
                f"the prompt ({longest} tokens) plus '{max_tokens_field}' ({max_tokens}) exceeds "
                f"this model's context of {context} tokens; lower '{max_tokens_field}' to at "
                f"most {context - longest}",
                "context_length_exceeded",
            )
        stops = list(dict.fromkeys([*extra_stops, *sampling.stop]))
        return Prepared(prompts, prompt_ids, max_tokens, sampling, stops)

    # -- running ------------------------------------------------------------------------

    def submit(
        self, prepared: Prepared, stream: bool
    ) -> tuple[asyncio.Queue[Event], list[GenerationRow]]:
        """Queue one row per prompt; their text and results arrive on the returned queue."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def deliver(item: Event) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(events.put_nowait, item)

        group = uuid.uuid4().hex
        sampling = prepared.sampling
        rows = []
        for index, ids in enumerate(prepared.prompt_ids):
            rows.append(
                GenerationRow(
                    prompt_ids=ids,
                    max_tokens=prepared.max_tokens,
                    stop=prepared.stops,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    top_k=sampling.top_k,
                    seed=sampling.seed,
                    group=group,
                    on_done=lambda result, i=index: deliver((i, result)),
                    on_text=(lambda text, i=index: deliver((i, text))) if stream else None,
                    logprobs=prepared.logprobs,
                    echo=prepared.echo,
                )
            )
        try:
            self.worker.submit(rows)
        except ShuttingDownError as err:
            raise shutting_down() from err
        except QueueFullError as err:
            raise busy(err) from err
        return events, rows

    def timeout_error(self) -> APIError:
        """The 504 answer to a request that ran out of time."""
        return APIError(
            504,
            f"the request did not finish within {self.config.request_timeout:g} s",
            code="timeout",
            error_type="timeout_error",
        )

    async def next_event(self, events: asyncio.Queue[Event], deadline: float) -> Event:
        """The next event, or a 504 once ``deadline`` (loop time) passes."""
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(events.get(), max(remaining, 0.0))
        except TimeoutError as err:
            raise self.timeout_error() from err

    async def run_to_end(self, prepared: Prepared, deadline: float) -> list[RowResult]:
        """Generate every prompt of a non-streamed request; results in prompt order."""
        events, rows = self.submit(prepared, stream=False)
        results: dict[int, RowResult] = {}
        try:
            while len(results) < len(rows):
                index, item = await self.next_event(events, deadline)
                if isinstance(item, RowResult):
                    results[index] = _checked(item)
        finally:
            for row in rows:
                row.cancelled.set()  # no effect on finished rows
        return [results[i] for i in range(len(rows))]

    async def stream(
        self, prepared: Prepared, deadline: float, shape: StreamShape
    ) -> AsyncIterator[str]:
        """Server-sent events for a streamed request.

        Waits for the first event before answering, so a request that times out or fails
        before any text gets an HTTP error rather than a stream.
        """
        events, rows = self.submit(prepared, stream=True)
        try:
            first = await self.next_event(events, deadline)
            if isinstance(first[1], RowResult):
                _checked(first[1])
        except BaseException:
            for row in rows:
                row.cancelled.set()
            raise
        return self._sse(prepared, deadline, shape, events, rows, first)

    async def _sse(
        self,
        prepared: Prepared,
        deadline: float,
        shape: StreamShape,
        events: asyncio.Queue[Event],
        rows: list[GenerationRow],
        first: Event,
    ) -> AsyncIterator[str]:
        finished: dict[int, RowResult] = {}
        try:
            for item in shape.opening:
                yield _sse_data(item)
            event: Event | None = first
            while event is not None or len(finished) < len(rows):
                index, item = event or await self.next_event(events, deadline)
                event = None
                if isinstance(item, str):
                    yield _sse_data(shape.chunk(index, item, None))
                else:
                    finished[index] = _checked(item)
                    yield _sse_data(shape.chunk(index, None, item.finish_reason))
            if prepared.sampling.include_usage:
                yield _sse_data(shape.usage_chunk(usage(prepared, list(finished.values()))))
            yield "data: [DONE]\n\n"
        except APIError as err:  # the status line is sent: report in the stream and end it
            logger.warning("streamed request ended early: %s", err.message)
            yield _sse_data(err.body())
        finally:
            for row in rows:
                row.cancelled.set()
