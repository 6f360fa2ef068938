"""The endpoint's settings (:class:`ServeConfig`, the ``serve`` command's flags) and its API key.

Its own module so that both the server (:mod:`~llmfoundry.inference.serve`) and the HTTP layer
(:mod:`~llmfoundry.inference.serve_api`, :mod:`~llmfoundry.inference.serve_endpoint`) import it
without importing each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from llmfoundry.inference.options import ModelSource
from llmfoundry.utils.config_checks import (
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    check_fields_of,
)
from llmfoundry.utils.exceptions import ConfigError

API_KEY_VARIABLE = "LLMFOUNDRY_API_KEY"


@dataclass
class ServeConfig:
    """Settings of the endpoint (the script's flags).

    Attributes:
        source: the model to serve and how to load it (a Hugging Face model folder or hub
            name; ``autocast_dtype`` is not supported: the endpoint generates in the weights'
            dtype, ``model_dtype``).
        model_name: the name requests use in ``model``; default the folder's name.
        host: address to bind; loopback by default.
        port: port to bind; 0 picks a free one.
        max_batch_size: most prompts in one ``generate`` call.
        batch_wait_ms: how long the worker waits for more requests before generating.
        max_new_tokens_limit: the largest ``max_tokens`` a request may ask for.
        request_timeout: seconds a request may take before it is answered with 504.
        max_prompts_per_request: the longest ``prompt`` list a completion request may carry.
        max_body_bytes: the largest request body; larger ones get 413.
        max_queue: most prompts that may wait for the worker; a request that would queue more
            gets 429 (and a request may hold no more prompts than this).
        api_key: when set, every route but ``/health`` needs ``Authorization: Bearer <key>``
            (left out of the config's repr, so it is never logged).
        access_log: log every request (uvicorn's access log).
    """

    source: ModelSource
    model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: PositiveInt = 8
    batch_wait_ms: NonNegativeFloat = 10.0
    max_new_tokens_limit: PositiveInt = 1024
    request_timeout: PositiveFloat = 300.0
    max_prompts_per_request: PositiveInt = 32
    max_body_bytes: PositiveInt = 1 << 20
    max_queue: PositiveInt = 256
    api_key: str | None = field(default=None, repr=False)
    access_log: bool = True

    def __post_init__(self) -> None:
        """Check the numbers.

        Raises:
            ConfigError: naming the flag whose value cannot work.
        """
        check_fields_of(self, "--", _RANGED_FIELDS)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535, got {self.port}")
        if self.source.autocast_dtype is not None:
            raise ConfigError(
                "serve does not take --autocast_dtype; choose the weights' dtype with --model_dtype"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("--api_key must not be empty; leave it out to serve without a key")

    @property
    def served_name(self) -> str:
        """The model name requests must use."""
        path = self.source.name_or_path
        return self.model_name or Path(path.rstrip("/")).name or path


# The numeric flags whose range their annotation declares.
_RANGED_FIELDS = (
    "max_batch_size",
    "batch_wait_ms",
    "max_new_tokens_limit",
    "request_timeout",
    "max_prompts_per_request",
    "max_body_bytes",
    "max_queue",
)


def resolve_api_key(flag: str | None) -> str | None:
    """The API key: ``flag`` when given, else ``$LLMFOUNDRY_API_KEY`` (None when unset or
    empty)."""
    return flag if flag is not None else os.environ.get(API_KEY_VARIABLE) or None
