"""A small client for OpenAI-compatible APIs (OpenAI itself, or ``scripts/inference/serve.py``).

Requests are plain HTTP through httpx. The API key comes from the ``OPENAI_API_KEY``
environment variable; it is required for OpenAI's own URL and optional for any other
``base_url``. A connection error, a timeout, 429 (except an exhausted quota) or a 5xx answer is
retried with exponential backoff; any other error fails at once, naming the URL and the
server's message.
"""

from __future__ import annotations

import os
from typing import Any

from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError, UserError
from llmfoundry.utils.http_client import RetryPolicy, error_message, post_with_retries

OPENAI_BASE_URL = "https://api.openai.com/v1"
API_KEY_ENV = "OPENAI_API_KEY"
RETRIED_STATUSES = frozenset({408, 409, 429})
# How much of an error body that is not OpenAI-style goes in a message.
ERROR_BODY_CHARS = 300


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as err:
        raise MissingDependencyError(
            "the OpenAI API models need httpx: pip install 'llm-foundry[serve]' (or httpx)"
        ) from err
    return httpx


class OpenAIClient:
    """Posts JSON to an OpenAI-compatible API, with retries.

    Args:
        base_url: the API root, up to and including ``/v1`` (default: OpenAI's).
        timeout: seconds per attempt.
        max_retries: further attempts after a retryable failure.
        backoff_s: the first wait before retrying; it roughly doubles (with jitter) each time.
        transport: an httpx transport to use instead of the network (tests).
        api_key_env: the environment variable holding the API key (sent as a bearer token).

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
        api_key_env: str = API_KEY_ENV,
    ) -> None:
        httpx = _import_httpx()
        self.base_url = (base_url or OPENAI_BASE_URL).rstrip("/")
        api_key = os.environ.get(api_key_env)
        if api_key is None and base_url is None:
            raise ConfigError(
                f"no OpenAI API key: set the {api_key_env} environment variable, or point "
                "model.base_url at another OpenAI-compatible server"
            )
        if max_retries < 0:
            raise ConfigError(f"model.max_retries={max_retries} must not be negative")
        self._retry = RetryPolicy(
            retries=max_retries,
            backoff_s=backoff_s,
            retried_statuses=RETRIED_STATUSES,
            jitter=True,
            quota_is_final=True,
            message_chars=ERROR_BODY_CHARS,
        )
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
            raise UserError(f"{url}: {error_message(response, ERROR_BODY_CHARS)}")
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``base_url + path`` and return the JSON answer, retrying as above.

        Raises:
            UserError: on an error answer, or when every attempt failed; names the URL.
        """
        url = self.base_url + path
        outcome = post_with_retries(self._client, url, body, self._retry, label=url)
        if outcome.response is None:
            raise UserError(
                f"{url}: no answer after {self._retry.retries + 1} attempts ({outcome.last_error})"
            )
        if outcome.response.status_code != 200:
            raise UserError(f"{url}: {error_message(outcome.response, ERROR_BODY_CHARS)}")
        return outcome.response.json()
