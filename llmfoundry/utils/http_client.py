"""What our clients of OpenAI-compatible APIs share: error messages and retries with backoff.

httpx is an optional dependency (the ``serve`` extra): callers check it is installed before
they call :func:`post_with_retries`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

# The longest Retry-After a client honours; a server asking for more is waited on this long.
MAX_RETRY_AFTER_S = 60.0


def error_message(response: httpx.Response, max_chars: int) -> str:
    """``HTTP <status>: <the server's message>``.

    The message is the ``error.message`` of an OpenAI-style error body, or else the first
    ``max_chars`` characters of the body.
    """
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:max_chars]
    return f"HTTP {response.status_code}: {message}"


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed request is tried again.

    A connection error or a timeout is always retried; an answer is retried for a 5xx status
    or one of ``retried_statuses``.

    Attributes:
        retries: further attempts after the first.
        backoff_s: the wait before the first retry; it doubles for each further one.
        retried_statuses: the statuses below 500 worth retrying.
        jitter: multiply each doubling by a random factor between 2/3 and 4/3.
        quota_is_final: never retry a 429 whose message mentions a quota (it will not recover).
        message_chars: how much of a body without an OpenAI-style error goes in a message.
    """

    retries: int
    backoff_s: float
    retried_statuses: frozenset[int]
    jitter: bool = False
    quota_is_final: bool = False
    message_chars: int = 500

    def delays(self) -> Iterator[float]:
        """The waits before each retry, in order."""
        delay = self.backoff_s
        while True:
            yield delay
            delay *= 2 * (1 + random.random()) / 1.5 if self.jitter else 2

    def retries_answer(self, response: httpx.Response) -> bool:
        """Whether ``response`` (not a 200) is worth another attempt."""
        status = response.status_code
        if (
            self.quota_is_final
            and status == 429
            and "quota" in error_message(response, self.message_chars).lower()
        ):
            return False
        return status >= 500 or status in self.retried_statuses


def retry_after_s(response: httpx.Response) -> float | None:
    """The wait a busy server asks for in its ``Retry-After`` header (seconds, at most
    :data:`MAX_RETRY_AFTER_S`), or None when it names none (or an HTTP date)."""
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return min(seconds, MAX_RETRY_AFTER_S) if math.isfinite(seconds) and seconds >= 0 else None


@dataclass
class RetryOutcome:
    """How :func:`post_with_retries` ended.

    Attributes:
        response: the final answer: a 200, or an error not worth retrying; None when every
            attempt failed.
        last_error: why the last attempt failed (empty when it did not).
    """

    response: httpx.Response | None
    last_error: str


def post_with_retries(
    client: httpx.Client, url: str, body: Mapping[str, Any], policy: RetryPolicy, label: str
) -> RetryOutcome:
    """POST ``body`` as JSON to ``url``, retrying as ``policy`` says.

    A retried answer's ``Retry-After`` (our endpoint's 429 and 503 carry one) lengthens the
    next wait to what the server asked. Each failed attempt is logged as a warning starting
    with ``label``.
    """
    import httpx

    delays = policy.delays()
    last_error = ""
    asked_wait: float | None = None
    for attempt in range(policy.retries + 1):
        if attempt:
            delay = next(delays)
            time.sleep(delay if asked_wait is None else max(delay, asked_wait))
        asked_wait = None
        try:
            response = client.post(url, json=body)
        except httpx.TransportError as err:  # connection refused or reset, timeouts
            last_error = f"{type(err).__name__}: {err}"
        else:
            if response.status_code == 200 or not policy.retries_answer(response):
                return RetryOutcome(response, "")
            last_error = error_message(response, policy.message_chars)
            asked_wait = retry_after_s(response)
        logger.warning("%s: %s (attempt %d)", label, last_error, attempt + 1)
    return RetryOutcome(None, last_error)
