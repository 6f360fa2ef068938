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
from llmfoundry.utils.config_checks import PositiveInt, check_value
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
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_new_tokens_limit: int = 1024
    request_timeout: float = 300.0
    max_prompts_per_request: int = 32
    max_body_bytes: int = 1 << 20
    max_queue: int = 256
    api_key: str | None = field(default=None, repr=False)
    access_log: bool = True

    def __post_init__(self) -> None:
        """Check the numbers.

        Raises:
            ConfigError: naming the flag whose value cannot work.
        """
        at_least_one = {
            "max_batch_size": self.max_batch_size,
            "max_new_tokens_limit": self.max_new_tokens_limit,
            "max_prompts_per_request": self.max_prompts_per_request,
            "max_body_bytes": self.max_body_bytes,
            "max_queue": self.max_queue,
        }
        for name, value in at_least_one.items():
            check_value(value, PositiveInt, f"--{name}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"--batch_wait_ms must be 0 or more, got {self.batch_wait_ms}")
        if self.request_timeout <= 0:
            raise ConfigError(f"--request_timeout must be positive, got {self.request_timeout}")
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


def resolve_api_key(flag: str | None) -> str | None:
    """The API key: ``flag`` when given, else ``$LLMFOUNDRY_API_KEY`` (None when unset or
    empty)."""
    return flag if flag is not None else os.environ.get(API_KEY_VARIABLE) or None
