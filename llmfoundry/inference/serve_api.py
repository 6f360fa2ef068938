"""The endpoint's HTTP layer: the FastAPI app and its routes.

``POST /v1/completions`` and ``POST /v1/chat/completions`` take OpenAI's fields; every error
is answered with an OpenAI-style body, ``{"error": {"message", "type", "param", "code"}}``.
With an API key configured, every route but ``/health`` needs ``Authorization: Bearer <key>``
(:class:`BearerAuth`). Requests are validated in
:mod:`~llmfoundry.inference.serve_requests`, run by
:mod:`~llmfoundry.inference.serve_endpoint` and answered with the bodies of
:mod:`~llmfoundry.inference.serve_responses`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from llmfoundry.inference.chat_template import render_chat, stop_strings, uses_chatml
from llmfoundry.inference.serve_batching import GenerationWorker, ServedModel
from llmfoundry.inference.serve_config import ServeConfig
from llmfoundry.inference.serve_endpoint import Endpoint, usage
from llmfoundry.inference.serve_logprobs import parse_logprobs
from llmfoundry.inference.serve_requests import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    APIError,
    bool_field,
    invalid_param,
    parse_prompts,
    parse_sampling,
    read_json_body,
)
from llmfoundry.inference.serve_responses import ChatResponse, CompletionResponse
from llmfoundry.utils.exceptions import UserError

logger = logging.getLogger(__name__)

DEFAULT_COMPLETION_MAX_TOKENS = 16
OPEN_PATHS = frozenset({"/health"})


class BearerAuth:
    """ASGI middleware: answer 401 to a request without ``Authorization: Bearer <key>``.

    ``/health`` stays open (for load balancers). The key is compared in constant time and is
    never written to a log or an error body.

    Args:
        app: the app to guard.
        key: the API key.
    """

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self._key = key.encode()

    def _authorized(self, scope: Scope) -> bool:
        headers = [value for name, value in scope["headers"] if name == b"authorization"]
        scheme, _, token = (headers[0] if len(headers) == 1 else b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an authorized (or open-route) request on; answer any other with 401."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        error = APIError(
            401,
            "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            code="invalid_api_key",
        )
        headers = {"WWW-Authenticate": "Bearer"}
        await JSONResponse(error.body(), status_code=401, headers=headers)(scope, receive, send)


def _deadline(endpoint: Endpoint) -> float:
    """The loop time by which a request that starts now must finish."""
    return asyncio.get_running_loop().time() + endpoint.config.request_timeout


async def _completions(endpoint: Endpoint, request: Request) -> Any:
    """``POST /v1/completions``: a JSON body, or server-sent events when streaming."""
    ends = _deadline(endpoint)
    body = await read_json_body(request, endpoint.config.max_body_bytes)
    try:
        top_n = parse_logprobs(body.pop("logprobs", None))
    except ValueError as err:
        raise invalid_param("logprobs", str(err)) from err
    sampling = parse_sampling(body, COMPLETION_FIELDS, endpoint.name, "max_tokens")
    if top_n is not None and sampling.stream:
        raise invalid_param("logprobs", "'logprobs' is not supported with 'stream': true")
    echo = bool_field(body, "echo")
    # A request never needs more room than the whole queue has.
    config = endpoint.config
    prompts = parse_prompts(body, min(config.max_prompts_per_request, config.max_queue))
    prepared = endpoint.prepare(
        prompts, sampling, DEFAULT_COMPLETION_MAX_TOKENS, "max_tokens", "prompt"
    )
    prepared.logprobs, prepared.echo = top_n, echo
    response = CompletionResponse(endpoint.name, prompts, echo)
    if sampling.stream:
        events = await endpoint.stream(prepared, ends, response.stream_shape())
        return StreamingResponse(events, media_type="text/event-stream")
    results = await endpoint.run_to_end(prepared, ends)
    return response.whole(results, usage(prepared, results))


async def _chat_completions(endpoint: Endpoint, request: Request) -> Any:
    """``POST /v1/chat/completions``: a JSON body, or server-sent events when streaming."""
    ends = _deadline(endpoint)
    body = await read_json_body(request, endpoint.config.max_body_bytes)
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        raise invalid_param("max_tokens", "give 'max_tokens' or 'max_completion_tokens', not both")
    field_name = "max_completion_tokens" if body.get("max_tokens") is None else "max_tokens"
    sampling = parse_sampling(body, CHAT_FIELDS, endpoint.name, field_name)
    tokenizer = endpoint.served.tokenizer
    try:
        prompt = render_chat(tokenizer, cast(Any, body.get("messages")))
    except UserError as err:
        raise invalid_param("messages", str(err)) from err
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
    response = ChatResponse(endpoint.name)
    if sampling.stream:
        events = await endpoint.stream(prepared, ends, response.stream_shape())
        return StreamingResponse(events, media_type="text/event-stream")
    (result,) = await endpoint.run_to_end(prepared, ends)
    return response.whole(result, usage(prepared, [result]))


def _add_error_handlers(app: FastAPI) -> None:
    """Answer every error, ours or the framework's, with an OpenAI-style body."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        del request
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

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


def _add_model_routes(app: FastAPI, endpoint: Endpoint) -> None:
    """``/health`` and the ``/v1/models`` listing."""

    @app.get("/health")
    async def health() -> JSONResponse:
        if endpoint.worker.draining:
            return JSONResponse({"status": "shutting_down"}, 503)
        if not endpoint.worker.alive:
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


def build_app(config: ServeConfig, served: ServedModel, worker: GenerationWorker) -> FastAPI:
    """The FastAPI app serving ``served`` through ``worker``."""
    endpoint = Endpoint(config, served, worker)
    app = FastAPI(title="llmfoundry", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.endpoint = endpoint
    _add_error_handlers(app)
    _add_model_routes(app, endpoint)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        return await _completions(endpoint, request)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        return await _chat_completions(endpoint, request)

    if config.api_key is not None:
        app.add_middleware(BearerAuth, key=config.api_key)
    return app
