"""The endpoint's limits: a bounded queue (429 with Retry-After, 503 while shutting down), the
optional API key, the caps on prompt length, ``max_tokens`` and ``n``, and the load-test tool.

A tiny Llama is served in-process on a free loopback port. Queue states are made deterministic
by pausing the worker until the queued rows are in place; nothing here measures time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.cli.commands.serve import main as serve_main
from llmfoundry.inference.options import ModelSource
from llmfoundry.inference.serve import (
    API_KEY_VARIABLE,
    RunningServer,
    ServeConfig,
    ServedModel,
    resolve_api_key,
    start_server,
)
from llmfoundry.inference.serve_load_test import LoadTestConfig, format_table, run_load_test
from llmfoundry.utils.exceptions import ConfigError
from tests import REPO
from tests.command_utils.tiny_models import run_script
from tests.fixtures import tiny_llama
from tests.inference.serve_helpers import wait_until

NAME = "tiny"
CONTEXT = 64  # tiny_llama's positions
TOKEN_LIMIT = 40
KEY = "s3cret-key-0123"


def completion_body(prompt: Any, max_tokens: int = 3, **extra: Any) -> dict[str, Any]:
    """A greedy completion request."""
    return {"model": NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}


def config(**overrides: Any) -> ServeConfig:
    settings: dict[str, Any] = {
        "port": 0,
        "max_new_tokens_limit": TOKEN_LIMIT,
        "max_prompts_per_request": 4,
        "access_log": False,
        **overrides,
    }
    return ServeConfig(ModelSource(NAME, device="cpu"), **settings)


@pytest.fixture(scope="module")
def served(tokenizer: PreTrainedTokenizerBase) -> ServedModel:
    return ServedModel.wrap(tiny_llama(tokenizer).eval(), tokenizer)


@pytest.fixture(scope="module")
def server(served: ServedModel) -> Iterator[RunningServer]:
    # Room for the load test's three clients' rows, and no more.
    with start_server(config(max_queue=3), served) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http


def post_in_background(url: str, body: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    """POST ``body`` from a thread; the response lands in the returned list."""
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(httpx.post(url + "/v1/completions", json=body, timeout=120))

    thread = threading.Thread(target=send)
    thread.start()
    return thread, answers


def assert_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    """The OpenAI-shaped error of ``response``, checked for its status and code."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


def test_full_queue_gets_429_with_retry_after_and_the_server_keeps_serving(
    server: RunningServer, client: httpx.Client
) -> None:
    with server.worker.paused():
        thread, answers = post_in_background(server.url, completion_body(["a", "b", "c"]))
        wait_until(lambda: server.worker.pending() == 3, "three rows queued")
        busy = client.post("/v1/completions", json=completion_body("c"))
        error = assert_error(busy, 429, "server_busy")
        assert error["type"] == "server_error"
        assert error["message"].startswith(
            "the server is busy (3 prompts are waiting, the most this server queues is 3)"
        )
        assert busy.headers["retry-after"].isdigit()
        assert 1 <= int(busy.headers["retry-after"]) <= 60
        assert server.worker.pending() == 3  # the rejected request queued nothing
    thread.join()
    assert answers[0].status_code == 200
    assert len(answers[0].json()["choices"]) == 3
    again = client.post("/v1/completions", json=completion_body("c"))
    assert again.status_code == 200


def test_request_larger_than_the_queue_is_a_400(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json=completion_body(["a", "b", "c", "d"]))
    error = assert_error(response, 400, "invalid_value")
    assert error["param"] == "prompt"
    assert error["message"] == "'prompt' holds 4 prompts; this server takes at most 3"


def test_shutting_down_answers_503_with_retry_after(served: ServedModel) -> None:
    with start_server(config(), served) as running, httpx.Client(base_url=running.url) as http:
        with running.worker.paused():
            thread, answers = post_in_background(running.url, completion_body("a"))
            wait_until(lambda: running.worker.pending() == 1, "a row queued")
            running.worker.drain()  # what the server does once shutdown starts
            thread.join()  # the queued row is dropped, not failed
            late = http.post("/v1/completions", json=completion_body("b"))
            assert_error(late, 503, "shutting_down")
            assert late.headers["retry-after"] == "5"
            health = http.get("/health")
            assert (health.status_code, health.json()) == (503, {"status": "shutting_down"})
        dropped = assert_error(answers[0], 503, "shutting_down")
        assert dropped["message"] == "the server is shutting down; retry later"
        assert answers[0].headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_queue": 0}, "--max_queue must be a positive int, got int 0"),
        ({"max_queue": -3}, "--max_queue must be a positive int, got int -3"),
        ({"api_key": " "}, "--api_key must not be empty; leave it out to serve without a key"),
    ],
    ids=["queue-zero", "queue-negative", "blank-key"],
)
def test_bad_limits_are_one_line_config_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(**overrides)
    assert str(caught.value) == message


def test_serve_flag_errors_before_loading_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(["--name_or_path", "missing", "--max_queue", "0"]) == 2
    assert capsys.readouterr().err == "error: --max_queue must be a positive int, got int 0\n"


def test_api_key_comes_from_the_flag_else_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
    assert resolve_api_key(None) is None
    monkeypatch.setenv(API_KEY_VARIABLE, "")
    assert resolve_api_key(None) is None
    monkeypatch.setenv(API_KEY_VARIABLE, "from-env")
    assert resolve_api_key(None) == "from-env"
    assert resolve_api_key("from-flag") == "from-flag"
    assert KEY not in repr(config(api_key=KEY))


def test_no_api_key_configured_leaves_every_route_open(client: httpx.Client) -> None:
    assert client.get("/v1/models").status_code == 200
    assert client.post("/v1/completions", json=completion_body("x")).status_code == 200


def test_api_key_guards_every_route_but_health(
    served: ServedModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = {"Authorization": f"Bearer {KEY}"}
    with (
        start_server(config(api_key=KEY), served) as running,
        httpx.Client(base_url=running.url, timeout=120) as http,
    ):
        assert http.get("/health").json() == {"status": "ok"}
        refused = [
            http.get("/v1/models"),
            http.get("/v1/models", headers={"Authorization": "Bearer wrong"}),
            http.get("/v1/models", headers={"Authorization": f"Basic {KEY}"}),
            http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}x"}),
            http.post("/v1/completions", json=completion_body("x")),
            http.post("/v1/chat/completions", json={"model": NAME, "messages": []}),
            http.get("/no/such/route"),
        ]
        for response in refused:
            error = assert_error(response, 401, "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"
            assert error["message"] == (
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'"
            )
            assert KEY not in response.text
        assert http.get("/v1/models", headers=good).json()["data"][0]["id"] == NAME
        lower = {"authorization": f"bearer {KEY}"}
        answer = http.post("/v1/completions", json=completion_body("x"), headers=lower)
        assert answer.status_code == 200
    assert KEY not in caplog.text


def test_prompt_over_the_context_is_a_400_naming_its_length(
    client: httpx.Client, tokenizer: PreTrainedTokenizerBase
) -> None:
    prompt = "a b " * 40
    tokens = len(tokenizer(prompt)["input_ids"])
    assert tokens >= CONTEXT
    error = assert_error(
        client.post("/v1/completions", json=completion_body(prompt)),
        400,
        "context_length_exceeded",
    )
    assert error["param"] == "prompt"
    assert error["message"] == (
        f"the prompt is {tokens} tokens; this model's context is {CONTEXT} tokens, "
        "which must also leave room for at least one new token"
    )


def test_max_tokens_over_the_server_limit_is_a_400(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json=completion_body("a", TOKEN_LIMIT + 1))
    error = assert_error(response, 400, "invalid_value")
    assert error["param"] == "max_tokens"
    assert error["message"] == "'max_tokens' is 41; this server allows at most 40"


def test_more_than_one_choice_is_a_400(client: httpx.Client) -> None:
    error = assert_error(
        client.post("/v1/completions", json=completion_body("a", n=3)), 400, "invalid_value"
    )
    assert error["param"] == "n"
    assert (
        error["message"]
        == "'n' is 3; this server returns at most 1 choice per prompt (n must be 1)"
    )


def test_load_test_counts_add_up(server: RunningServer) -> None:
    result = run_load_test(
        LoadTestConfig(
            server.url, clients=3, seconds=2, max_tokens=4, timeout=120, server_pid=os.getpid()
        )
    )
    assert result.requests > 0
    assert result.requests == result.successes + result.busy + sum(result.failures.values())
    assert (result.busy, result.failures) == (0, {})
    assert len(result.latencies) == result.successes
    p50, p99 = result.percentile(0.5), result.percentile(0.99)
    assert p50 is not None and p99 is not None
    assert min(result.latencies) <= p50 <= p99 <= max(result.latencies)
    rss = result.rss_mib
    assert len(rss) >= 2 and rss[0] <= max(rss) and rss[-1] <= max(rss)
    table = format_table(result).splitlines()
    assert table[0].startswith("| clients | seconds | requests | ok | 429 (busy) | failed |")
    assert table[2].startswith(f"| 3 | {result.seconds:.1f} | {result.requests} ")
    assert "failed by status: none" in table[4]
    assert table[-1].startswith(f"| {len(rss)} samples | {rss[0]:.1f} | {max(rss):.1f} |")


def test_load_test_script_reports_refusals_and_user_errors(served: ServedModel) -> None:
    script = REPO / "scripts/inference/load_test.py"
    bad = run_script(script, "--url", "http://127.0.0.1:1", "--clients", "0")
    assert (bad.returncode, bad.stderr) == (
        2,
        "error: --clients must be a positive int, got int 0\n",
    )
    with start_server(config(api_key=KEY), served) as running:
        unlisted = run_script(script, "--url", running.url, "--seconds", "0.5")
        assert unlisted.returncode == 2
        assert unlisted.stderr.endswith(
            f"error: GET {running.url}/v1/models answered 401; pass --model (and --api_key if "
            "the server needs one)\n"
        )
        refused = run_script(
            script, "--url", running.url, "--seconds", "0.5", "--model", NAME, "--clients", "2"
        )
    assert refused.returncode == 0, refused.stderr
    row = refused.stdout.splitlines()[2].split("|")
    requests, ok, busy, failed = (int(row[i]) for i in (3, 4, 5, 6))
    assert requests > 0 and (ok, busy, failed) == (0, 0, requests)
    assert f"failed by status: 401: {requests} " in refused.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"seconds": 0}, r"^--seconds must be a positive float, got int 0$"),
        ({"timeout": -1.0}, r"^--timeout must be a positive float, got float -1\.0$"),
        ({"max_tokens": 0}, r"^--max_tokens must be a positive int, got int 0$"),
    ],
)
def test_load_test_numbers_are_checked_with_their_flag(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoadTestConfig(url="http://127.0.0.1:1", **flags)
