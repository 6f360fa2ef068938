"""The endpoint's requests: OpenAI-shaped bodies validated into plain settings.

Every error is an :class:`APIError`, answered with an OpenAI-style body,
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request

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
    "top_k",
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


class APIError(Exception):
    """An error answered with an OpenAI-style body.

    Args:
        status: the HTTP status.
        message: what is wrong and how to fix it.
        param: the request field at fault, if one is.
        code: a short machine-readable code.
        error_type: OpenAI's ``type`` (``invalid_request_error`` for the caller's mistakes).
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        error_type: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type
        self.headers = dict(headers or {})

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


def invalid_param(param: str, message: str, code: str = "invalid_value") -> APIError:
    """A 400 naming the request field ``param`` as the one at fault."""
    return APIError(400, message, param=param, code=code)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_field(body: Mapping[str, Any], name: str, minimum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_param(
            name, f"'{name}' must be an integer, got {json.dumps(value)}", "invalid_type"
        )
    if minimum is not None and value < minimum:
        raise invalid_param(name, f"'{name}' must be at least {minimum}, got {value}")
    return value


def _float_field(
    body: Mapping[str, Any], name: str, default: float, low: float, high: float, low_open: bool
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value):
        raise invalid_param(
            name, f"'{name}' must be a number, got {json.dumps(value)}", "invalid_type"
        )
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        bound = "(" if low_open else "["
        raise invalid_param(name, f"'{name}' must be in {bound}{low}, {high}], got {value}")
    return float(value)


def bool_field(body: Mapping[str, Any], name: str) -> bool:
    """The boolean field ``name`` of ``body`` (False when absent).

    Raises:
        APIError: 400 for a value that is not true or false.
    """
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid_param(
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
        top_k: sample among this many likeliest tokens (0: all; not in OpenAI's API, but vLLM's
            and LLM Foundry's endpoint_generate send it; -1 is read as 0, as vLLM does).
        stop: stop strings.
        seed: sampler seed, or None.
        stream: answer with server-sent events.
        include_usage: (streaming) send a final chunk with token counts.
    """

    max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    stop: list[str]
    seed: int | None
    stream: bool
    include_usage: bool


def _check_fields(body: Mapping[str, Any], allowed: frozenset[str], served_name: str) -> None:
    """Reject unknown fields, unsupported values and a model this server does not serve."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid_param(
            unknown[0], f"unrecognized request argument supplied: {unknown[0]}", "unknown_parameter"
        )
    for name, defaults in ACCEPTED_AT_DEFAULT.items():
        if name in body and not any(body[name] == d for d in defaults):
            raise invalid_param(
                name,
                f"'{name}' is not supported by this server; leave it out",
                "unsupported_parameter",
            )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_param(
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


def _stop_strings(body: Mapping[str, Any]) -> list[str]:
    """The request's ``stop``, as a list."""
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise invalid_param(
            "stop", "'stop' must be a non-empty string or a list of them", "invalid_type"
        )
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid_param(
            "stop", f"'stop' takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}"
        )
    return stops


def parse_sampling(
    body: Mapping[str, Any], allowed: frozenset[str], served_name: str, max_tokens_field: str
) -> SamplingRequest:
    """Validate the fields every generation request shares.

    Raises:
        APIError: 400 naming the bad field; 404 for a model this server does not serve.
    """
    _check_fields(body, allowed, served_name)
    n = _int_field(body, "n")
    if n not in (None, 1):
        raise invalid_param(
            "n", f"'n' is {n}; this server returns at most 1 choice per prompt (n must be 1)"
        )
    stops = _stop_strings(body)
    options = body.get("stream_options")
    if options is not None and not (
        isinstance(options, dict)
        and set(options) <= {"include_usage"}
        and isinstance(options.get("include_usage", False), bool)
    ):
        raise invalid_param(
            "stream_options", "'stream_options' takes only {\"include_usage\": true|false}"
        )
    stream = bool_field(body, "stream")
    if options is not None and not stream:
        raise invalid_param(
            "stream_options", "'stream_options' is only allowed with 'stream': true"
        )
    return SamplingRequest(
        max_tokens=_int_field(body, max_tokens_field, minimum=1),
        temperature=_float_field(body, "temperature", 1.0, 0.0, 2.0, low_open=False),
        top_p=_float_field(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        top_k=max(_int_field(body, "top_k", minimum=-1) or 0, 0),
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
        raise invalid_param(
            "prompt", "'prompt' must be a string or a non-empty list of strings", "invalid_type"
        )
    if len(prompts) > max_prompts:
        raise invalid_param(
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


async def read_json_body(request: Request, limit: int) -> dict[str, Any]:
    """The JSON body, read no further than ``limit`` bytes (whatever Content-Length says).

    Raises:
        APIError: 413 for a body over the limit; 400 for one that is not a JSON object.
    """
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
