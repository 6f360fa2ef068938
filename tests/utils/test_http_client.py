"""Retries of our OpenAI-style clients: the backoff, and a busy server's Retry-After."""

from __future__ import annotations

import httpx
import pytest

from llmfoundry.utils import http_client
from llmfoundry.utils.http_client import RetryPolicy, post_with_retries, retry_after_s

POLICY = RetryPolicy(retries=3, backoff_s=0.5, retried_statuses=frozenset({429}))


def _client(answers: list[httpx.Response]) -> httpx.Client:
    queue = list(answers)
    return httpx.Client(transport=httpx.MockTransport(lambda request: queue.pop(0)))


def _waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(http_client.time, "sleep", waits.append)
    return waits


def test_a_busy_servers_retry_after_sets_the_next_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    waits = _waits(monkeypatch)
    answers = [
        httpx.Response(429, headers={"Retry-After": "3"}, json={"error": {"message": "busy"}}),
        httpx.Response(503, headers={"Retry-After": "0"}),  # shorter than the backoff: backoff
        httpx.Response(429, json={"error": {"message": "busy"}}),  # no header: the backoff
        httpx.Response(200, json={"ok": True}),
    ]
    outcome = post_with_retries(_client(answers), "http://x/v1", {}, POLICY, "test")
    assert outcome.response is not None and outcome.response.status_code == 200
    assert waits == [3.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("1.5", 1.5), ("600", 60.0), ("-1", None), ("soon", None), (None, None),
     ("Wed, 21 Oct 2026 07:28:00 GMT", None), ("nan", None)],
)  # fmt: skip
def test_retry_after_is_read_in_seconds_and_capped(
    header: str | None, expected: float | None
) -> None:
    headers = {} if header is None else {"Retry-After": header}
    assert retry_after_s(httpx.Response(429, headers=headers)) == expected
