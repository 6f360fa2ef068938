"""A small client for OpenAI-compatible APIs (OpenAI itself, or ``scripts/inference/serve.py``).

Requests are plain HTTP through httpx. The API key comes from the ``OPENAI_API_KEY``
environment variable; it is required for OpenAI's own URL and optional for any other
``base_url``. A connection error, a timeout, 429 (except an exhausted quota) or a 5xx answer is
retried with exponential backoff; any other error fails at once, naming the URL and the
server's message.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError, UserError

logger = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
API_KEY_ENV = "OPENAI_API_KEY"
RETRIED_STATUSES = frozenset({408, 409, 429})


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as err:
        raise MissingDependencyError(
            "the OpenAI API models need httpx: pip install 'llm-foundry[serve]' (or httpx)"
        ) from err
    return httpx


def _error_message(response: Any) -> str:
    """``HTTP <status>: <the server's message>``."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    return f"HTTP {response.status_code}: {message}"


class OpenAIClient:
    """Posts JSON to an OpenAI-compatible API, with retries.

    Args:
        base_url: the API root, up to and including ``/v1`` (default: OpenAI's).
        timeout: seconds per attempt.
        max_retries: further attempts after a retryable failure.
        backoff_s: the first wait before retrying; it roughly doubles (with jitter) each time.
        transport: an httpx transport to use instead of the network (tests).

    Raises:
        ConfigError: without ``OPENAI_API_KEY`` for OpenAI's own URL, or for a negative
            ``max_retries``.
        MissingDependencyError: if httpx is not installed.
    """

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 10,
        backoff_s: float = 1.0,
        transport: Any = None,
    ) -> None:
        httpx = _import_httpx()
        self.base_url = (base_url or OPENAI_BASE_URL).rstrip("/")
        api_key = os.environ.get(API_KEY_ENV)
        if api_key is None and base_url is None:
            raise ConfigError(
                f"no OpenAI API key: set the {API_KEY_ENV} environment variable, or point "
                "model.base_url at another OpenAI-compatible server"
            )
        if max_retries < 0:
            raise ConfigError(f"model.max_retries={max_retries} must not be negative")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def get(self, path: str) -> dict[str, Any]:
        """GET ``base_url + path`` (no retries).

        Raises:
            UserError: if it fails, naming the URL.
        """
        httpx = _import_httpx()
        url = self.base_url + path
        try:
            response = self._client.get(url)
        except httpx.TransportError as err:
            raise UserError(f"could not reach {url}: {type(err).__name__}: {err}") from err
        if response.status_code != 200:
            raise UserError(f"{url}: {_error_message(response)}")
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``base_url + path`` and return the JSON answer, retrying as above.

        Raises:
            UserError: on an error answer, or when every attempt failed; names the URL.
        """
        httpx = _import_httpx()
        url = self.base_url + path
        delay = self.backoff_s
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2 * (1 + random.random()) / 1.5
            try:
                response = self._client.post(url, json=body)
            except httpx.TransportError as err:  # connection refused or reset, timeouts
                last = f"{type(err).__name__}: {err}"
                logger.warning("%s: %s (attempt %d)", url, last, attempt + 1)
                continue
            if response.status_code == 200:
                return response.json()
            last = _error_message(response)
            quota = response.status_code == 429 and "quota" in last.lower()
            if quota or not (
                response.status_code >= 500 or response.status_code in RETRIED_STATUSES
            ):
                raise UserError(f"{url}: {last}")
            logger.warning("%s: %s (attempt %d)", url, last, attempt + 1)
        raise UserError(f"{url}: no answer after {self.max_retries + 1} attempts ({last})")
