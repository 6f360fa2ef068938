"""The endpoint's HTTP layer: OpenAI-shaped requests, validation, errors and streaming.

``POST /v1/completions`` and ``POST /v1/chat/completions`` take OpenAI's fields; every error
is answered with an OpenAI-style body, ``{"error": {"message", "type", "param", "code"}}``.
Prompts go to a :class:`~llmfoundry.command_utils.serve_batching.GenerationWorker`; its results
come back to the request's event loop through an ``asyncio.Queue``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from llmfoundry.command_utils.chat_template import render_chat, stop_strings, uses_chatml
from llmfoundry.command_utils.serve_batching import (
    GenerationRow,
    GenerationWorker,
    RowResult,
    ServedModel,
)
from llmfoundry.command_utils.serve_logprobs import parse_logprobs
from llmfoundry.utils.exceptions import UserError

if TYPE_CHECKING:
    from llmfoundry.command_utils.serve import ServeConfig

logger = logging.getLogger(__name__)

# Fields a request may carry that we accept only at their OpenAI default (anything else would
# silently change what the caller asked for).
ACCEPTED_AT_DEFAULT: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "parallel_tool_calls": (None,),
    "tools": (None, []),
    "response_format": (None, {"type": "text"}),
}
COMMON_FIELDS = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "user",
)
COMPLETION_FIELDS = frozenset((*COMMON_FIELDS, *ACCEPTED_AT_DEFAULT, "prompt", "echo"))
CHAT_FIELDS = frozenset((*COMMON_FIELDS, *ACCEPTED_AT_DEFAULT, "messages", "max_completion_tokens"))
MAX_STOP_STRINGS = 4
DEFAULT_COMPLETION_MAX_TOKENS = 16


# ----------------------------------------------------------------------------------------------
# Requests: validation into plain settings
# ----------------------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered with an OpenAI-style body.

    Args:
        status: the HTTP status.
        message: what is wrong and how to fix it.
        param: the request field at fault, if one is.
        code: a short machine-readable code.
        error_type: OpenAI's ``type`` (``invalid_request_error`` for the caller's mistakes).
    """

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


def _invalid(param: str, message: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_field(body: Mapping[str, Any], name: str, minimum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(
            name, f"'{name}' must be an integer, got {json.dumps(value)}", "invalid_type"
        )
    if minimum is not None and value < minimum:
        raise _invalid(name, f"'{name}' must be at least {minimum}, got {value}")
    return value


def _float_field(
    body: Mapping[str, Any], name: str, default: float, low: float, high: float, low_open: bool
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value):
        raise _invalid(name, f"'{name}' must be a number, got {json.dumps(value)}", "invalid_type")
    if value > high or value < low or (low_open and value == low):
        bound = "(" if low_open else "["
        raise _invalid(name, f"'{name}' must be in {bound}{low}, {high}], got {value}")
    return float(value)


def _bool_field(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(
            name, f"'{name}' must be true or false, got {json.dumps(value)}", "invalid_type"
        )
    return value


@dataclass
class SamplingRequest:
    """The settings a completion or chat request shares, validated.

    Attributes:
        max_tokens: the requested limit, or None for the endpoint's default.
        temperature: 0 for greedy decoding.
        top_p: nucleus sampling mass.
        stop: stop strings.
        seed: sampler seed, or None.
        stream: answer with server-sent events.
        include_usage: (streaming) send a final chunk with token counts.
    """

    max_tokens: int | None
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    stream: bool
    include_usage: bool


def parse_sampling(
    body: Mapping[str, Any], allowed: frozenset[str], served_name: str, max_tokens_field: str
) -> SamplingRequest:
    """Validate the fields every generation request shares.

    Raises:
        APIError: 400 naming the bad field; 404 for a model this server does not serve.
    """
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _invalid(
            unknown[0], f"unrecognized request argument supplied: {unknown[0]}", "unknown_parameter"
        )
    for name, defaults in ACCEPTED_AT_DEFAULT.items():
        if name in body and not any(body[name] == d for d in defaults):
            raise _invalid(
                name,
                f"'{name}' is not supported by this server; leave it out",
                "unsupported_parameter",
            )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid(
            "model",
            "'model' is required: the name of the served model",
            "missing_required_parameter",
        )
    if model != served_name:
        raise APIError(
            404,
            f"The model '{model}' does not exist; this server serves '{served_name}'",
            param="model",
            code="model_not_found",
        )
    n = _int_field(body, "n")
    if n not in (None, 1):
        raise _invalid("n", f"'n' must be 1 (one choice per prompt), got {n}")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _invalid(
            "stop", "'stop' must be a non-empty string or a list of them", "invalid_type"
        )
    if len(stops) > MAX_STOP_STRINGS:
        raise _invalid("stop", f"'stop' takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}")
    options = body.get("stream_options")
    if options is not None and not (
        isinstance(options, dict)
        and set(options) <= {"include_usage"}
        and isinstance(options.get("include_usage", False), bool)
    ):
        raise _invalid(
            "stream_options", "'stream_options' takes only {\"include_usage\": true|false}"
        )
    stream = _bool_field(body, "stream")
    if options is not None and not stream:
        raise _invalid("stream_options", "'stream_options' is only allowed with 'stream': true")
    return SamplingRequest(
        max_tokens=_int_field(body, max_tokens_field, minimum=1),
        temperature=_float_field(body, "temperature", 1.0, 0.0, 2.0, low_open=False),
        top_p=_float_field(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        stop=stops,
        seed=_int_field(body, "seed"),
        stream=stream,
        include_usage=bool(options and options.get("include_usage")),
    )


def parse_prompts(body: Mapping[str, Any], max_prompts: int) -> list[str]:
    """The completion request's ``prompt`` as a list of strings.

    Raises:
        APIError: 400 for a missing, empty or non-string prompt, or too many prompts.
    """
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise _invalid(
            "prompt", "'prompt' must be a string or a non-empty list of strings", "invalid_type"
        )
    if len(prompts) > max_prompts:
        raise _invalid(
            "prompt",
            f"'prompt' holds {len(prompts)} prompts; this server takes at most {max_prompts}",
        )
    return prompts


def decode_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises:
        APIError: 400 for a body that is not a JSON object.
    """
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(
            400, f"the request body is not valid JSON: {err}", code="invalid_json"
        ) from err
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return body


# ----------------------------------------------------------------------------------------------
# The HTTP app
# ----------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """A validated generation request: its rows' prompts and settings."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    max_tokens: int
    sampling: SamplingRequest
    stops: list[str]
    logprobs: int | None = None
    echo: bool = False


@dataclass
class _StreamShape:
    """How one API writes its stream.

    Attributes:
        chunk: builds a chunk from ``(index, text, finish_reason)``.
        opening: chunks sent before any text (the chat role, echoed prompts).
        usage_chunk: builds the final usage chunk (sent when the request asks for it).
    """

    chunk: Callable[[int, str | None, str | None], dict[str, Any]]
    opening: list[dict[str, Any]]
    usage_chunk: Callable[[dict[str, int]], dict[str, Any]]


class _Endpoint:
    """The request handlers, sharing the model, the worker and the settings."""

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
    ) -> _Prepared:
        """Tokenize and check the prompts against the context and the token limits.

        Raises:
            APIError: 400 for an empty prompt, or one that with ``max_tokens`` overflows.
        """
        context = self.served.context_length
        limit = self.config.max_new_tokens_limit
        prompt_ids = [self.tokenize(p, add_special_tokens) for p in prompts]
        longest = max(len(ids) for ids in prompt_ids)
        if min(len(ids) for ids in prompt_ids) == 0:
            raise _invalid(prompt_field, f"'{prompt_field}' must not be empty (it has no tokens)")
        if context is not None and longest >= context:
            raise _invalid(
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
            raise _invalid(
                max_tokens_field,
                f"'{max_tokens_field}' is {max_tokens}; this server allows at most {limit}",
            )
        if context is not None and longest + max_tokens > context:
            raise _invalid(
                max_tokens_field,
                f"the prompt ({longest} tokens) plus '{max_tokens_field}' ({max_tokens}) exceeds "
                f"this model's context of {context} tokens; lower '{max_tokens_field}' to at "
                f"most {context - longest}",
                "context_length_exceeded",
            )
        stops = list(dict.fromkeys([*extra_stops, *sampling.stop]))
        return _Prepared(prompts, prompt_ids, max_tokens, sampling, stops)

    # -- running ------------------------------------------------------------------------

    def submit(
        self, prepared: _Prepared, stream: bool
    ) -> tuple[asyncio.Queue[tuple[int, str | RowResult]], list[GenerationRow]]:
        """Queue one row per prompt; their text and results arrive on the returned queue.

        Items are ``(index, text)`` for streamed text and ``(index, RowResult)`` when a row ends.
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, str | RowResult]] = asyncio.Queue()

        def deliver(item: tuple[int, str | RowResult]) -> None:
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
        except RuntimeError as err:
            raise APIError(503, str(err), code="shutting_down", error_type="server_error") from err
        return events, rows

    def timeout_error(self) -> APIError:
        """The 504 answer to a request that ran out of time."""
        return APIError(
            504,
            f"the request did not finish within {self.config.request_timeout:g} s",
            code="timeout",
            error_type="timeout_error",
        )

    async def next_event(
        self, events: asyncio.Queue[tuple[int, str | RowResult]], deadline: float
    ) -> tuple[int, str | RowResult]:
        """The next event, or a 504 once ``deadline`` (loop time) passes."""
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(events.get(), max(remaining, 0.0))
        except TimeoutError as err:
            raise self.timeout_error() from err

    async def run_to_end(self, prepared: _Prepared, deadline: float) -> list[RowResult]:
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
        self, prepared: _Prepared, deadline: float, shape: _StreamShape
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
        prepared: _Prepared,
        deadline: float,
        shape: _StreamShape,
        events: asyncio.Queue[tuple[int, str | RowResult]],
        rows: list[GenerationRow],
        first: tuple[int, str | RowResult],
    ) -> AsyncIterator[str]:
        finished: dict[int, RowResult] = {}
        try:
            for item in shape.opening:
                yield _sse_data(item)
            event: tuple[int, str | RowResult] | None = first
            while event is not None or len(finished) < len(rows):
                index, item = event or await self.next_event(events, deadline)
                event = None
                if isinstance(item, str):
                    yield _sse_data(shape.chunk(index, item, None))
                else:
                    finished[index] = _checked(item)
                    yield _sse_data(shape.chunk(index, None, item.finish_reason))
            if prepared.sampling.include_usage:
                yield _sse_data(shape.usage_chunk(_usage(prepared, list(finished.values()))))
            yield "data: [DONE]\n\n"
        except APIError as err:  # the status line is sent: report in the stream and end it
            logger.warning("streamed request ended early: %s", err.message)
            yield _sse_data(err.body())
        finally:
            for row in rows:
                row.cancelled.set()


def _checked(result: RowResult) -> RowResult:
    """``result``, or a 500 if generation failed."""
    if result.error is not None:
        raise APIError(500, result.error, code="generation_failed", error_type="server_error")
    return result


def _sse_data(payload: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _usage(prepared: _Prepared, results: Sequence[RowResult]) -> dict[str, int]:
    prompt_tokens = sum(len(ids) for ids in prepared.prompt_ids)
    completion_tokens = sum(result.completion_tokens for result in results)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def build_app(config: ServeConfig, served: ServedModel, worker: GenerationWorker) -> FastAPI:
    """The FastAPI app serving ``served`` through ``worker``."""
    endpoint = _Endpoint(config, served, worker)
    app = FastAPI(title="llmfoundry", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.endpoint = endpoint

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        del request
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        del request
        error = APIError(err.status_code, str(err.detail), code=None)
        return JSONResponse(error.body(), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        del request
        logger.exception("request failed")
        error = APIError(500, f"internal error: {type(err).__name__}", error_type="server_error")
        return JSONResponse(error.body(), status_code=500)

    def deadline() -> float:
        return asyncio.get_running_loop().time() + config.request_timeout

    async def read_body(request: Request) -> dict[str, Any]:
        """The JSON body, read no further than the size limit (whatever Content-Length says)."""
        limit = config.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_large = declared.isdigit() and int(declared) > limit
        raw = bytearray()
        if not too_large:
            async for piece in request.stream():
                raw += piece
                if len(raw) > limit:
                    too_large = True
                    break
        if too_large:
            raise APIError(
                413,
                f"the request body is over the limit of {limit} bytes",
                code="request_too_large",
            )
        return decode_json_body(bytes(raw))

    @app.get("/health")
    async def health() -> JSONResponse:
        if not worker.alive:
            return JSONResponse({"status": "error", "detail": "the generation worker stopped"}, 503)
        return JSONResponse({"status": "ok"})

    def model_card() -> dict[str, Any]:
        return {
            "id": endpoint.name,
            "object": "model",
            "created": endpoint.created,
            "owned_by": "llmfoundry",
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        if name != endpoint.name:
            raise APIError(
                404, f"The model '{name}' does not exist", param="model", code="model_not_found"
            )
        return model_card()

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        ends = deadline()
        body = await read_body(request)
        try:
            top_n = parse_logprobs(body.pop("logprobs", None))
        except ValueError as err:
            raise _invalid("logprobs", str(err)) from err
        sampling = parse_sampling(body, COMPLETION_FIELDS, endpoint.name, "max_tokens")
        if top_n is not None and sampling.stream:
            raise _invalid("logprobs", "'logprobs' is not supported with 'stream': true")
        echo = _bool_field(body, "echo")
        prompts = parse_prompts(body, config.max_prompts_per_request)
        prepared = endpoint.prepare(
            prompts, sampling, DEFAULT_COMPLETION_MAX_TOKENS, "max_tokens", "prompt"
        )
        prepared.logprobs, prepared.echo = top_n, echo
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def response(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": endpoint.name,
                "choices": choices,
                **extra,
            }

        if sampling.stream:

            def chunk(index: int, text: str | None, finish: str | None) -> dict[str, Any]:
                choice = {
                    "index": index,
                    "text": text or "",
                    "logprobs": None,
                    "finish_reason": finish,
                }
                return response([choice])

            opening = [chunk(i, p, None) for i, p in enumerate(prompts)] if echo else []
            shape = _StreamShape(chunk, opening, lambda usage: response([], usage=usage))
            events = await endpoint.stream(prepared, ends, shape)
            return StreamingResponse(events, media_type="text/event-stream")
        results = await endpoint.run_to_end(prepared, ends)
        choices = [
            {
                "index": index,
                "text": (prompts[index] if echo else "") + result.text,
                "logprobs": result.logprobs,
                "finish_reason": result.finish_reason,
            }
            for index, result in enumerate(results)
        ]
        return response(choices, usage=_usage(prepared, results))

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        ends = deadline()
        body = await read_body(request)
        if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
            raise _invalid("max_tokens", "give 'max_tokens' or 'max_completion_tokens', not both")
        field_name = "max_completion_tokens" if body.get("max_tokens") is None else "max_tokens"
        sampling = parse_sampling(body, CHAT_FIELDS, endpoint.name, field_name)
        tokenizer = served.tokenizer
        try:
            prompt = render_chat(tokenizer, cast(Any, body.get("messages")))
        except UserError as err:
            raise _invalid("messages", str(err)) from err
        # A tokenizer's own chat template writes its special tokens itself.
        prepared = endpoint.prepare(
            [prompt],
            sampling,
            None,
            field_name,
            "messages",
            extra_stops=stop_strings(tokenizer),
            add_special_tokens=uses_chatml(tokenizer),
        )
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def response(obj: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {
                "id": ident,
                "object": obj,
                "created": created,
                "model": endpoint.name,
                "choices": choices,
                **extra,
            }

        if sampling.stream:

            def chunk(index: int, text: str | None, finish: str | None) -> dict[str, Any]:
                delta = {} if text is None else {"content": text}
                choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
                return response("chat.completion.chunk", [choice])

            role = chunk(0, "", None)
            role["choices"][0]["delta"]["role"] = "assistant"
            shape = _StreamShape(
                chunk, [role], lambda usage: response("chat.completion.chunk", [], usage=usage)
            )
            events = await endpoint.stream(prepared, ends, shape)
            return StreamingResponse(events, media_type="text/event-stream")
        (result,) = await endpoint.run_to_end(prepared, ends)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "logprobs": None,
            "finish_reason": result.finish_reason,
        }
        return response("chat.completion", [choice], usage=_usage(prepared, [result]))

    return app
