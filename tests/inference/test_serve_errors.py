"""The OpenAI-compatible endpoint's errors: OpenAI-style bodies for bad requests, the time
limit, bad settings and missing folders, and the ``serve`` script's startup and shutdown.

The server is the tiny MPT of :mod:`tests.inference.serve_helpers`, served in-process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from llmfoundry.inference.options import ModelSource
from llmfoundry.inference.serve import (
    ServeConfig,
    ServedModel,
    load_served_model,
    start_server,
)
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from tests import REPO
from tests.inference.serve_helpers import (
    NAME,
    PROMPTS,
    TOKEN_LIMIT,
    completion_body,
    generate_alone,
    serve_config,
)

BAD_REQUESTS: list[tuple[str, str, Any, int, str | None, str | None]] = [
    # (id, path, body (bytes are sent raw), status, param, code)
    ("malformed-json", "/v1/completions", b'{"model": "tiny-mpt", ', 400, None, "invalid_json"),
    ("not-an-object", "/v1/completions", [1, 2], 400, None, "invalid_json"),
    ("missing-model", "/v1/completions", {"prompt": "a"}, 400, "model", None),
    (
        "unknown-model",
        "/v1/completions",
        {"model": "gpt-9", "prompt": "a"},
        404,
        "model",
        "model_not_found",
    ),
    ("missing-prompt", "/v1/completions", {"model": NAME}, 400, "prompt", None),
    ("prompt-not-text", "/v1/completions", completion_body(42), 400, "prompt", None),
    ("empty-prompt", "/v1/completions", completion_body(""), 400, "prompt", None),
    ("max-tokens-zero", "/v1/completions", completion_body("a", 0), 400, "max_tokens", None),
    ("max-tokens-text", "/v1/completions", completion_body("a", "5"), 400, "max_tokens", None),
    (
        "max-tokens-over-limit",
        "/v1/completions",
        completion_body("a", TOKEN_LIMIT + 1),
        400,
        "max_tokens",
        None,
    ),
    (
        "negative-temperature",
        "/v1/completions",
        completion_body("a", temperature=-1),
        400,
        "temperature",
        None,
    ),
    (
        "nan-temperature",  # JSON's NaN literal, as Python's json module writes it
        "/v1/completions",
        json.dumps(completion_body("a", temperature=float("nan"))).encode(),
        400,
        "temperature",
        None,
    ),
    ("top-p-zero", "/v1/completions", completion_body("a", top_p=0), 400, "top_p", None),
    ("two-choices", "/v1/completions", completion_body("a", n=2), 400, "n", None),
    ("bad-stop", "/v1/completions", completion_body("a", stop=[1]), 400, "stop", None),
    ("unknown-field", "/v1/completions", completion_body("a", foo=1), 400, "foo", None),
    (
        "unsupported-field",
        "/v1/completions",
        completion_body("a", logit_bias={"5": 1}),
        400,
        "logit_bias",
        None,
    ),
    (
        "logprobs-over-limit",
        "/v1/completions",
        completion_body("a", logprobs=21),
        400,
        "logprobs",
        None,
    ),
    (
        "logprobs-while-streaming",
        "/v1/completions",
        completion_body("a", logprobs=2, stream=True),
        400,
        "logprobs",
        None,
    ),
    ("too-many-prompts", "/v1/completions", completion_body(["a"] * 5), 400, "prompt", None),
    (
        "prompt-plus-tokens-over-context",
        "/v1/completions",
        completion_body("def f(x):", 60),
        400,
        "max_tokens",
        "context_length_exceeded",
    ),
    (
        "prompt-over-context",
        "/v1/completions",
        completion_body("a b " * 60),
        400,
        "prompt",
        "context_length_exceeded",
    ),
    (
        "body-too-large",
        "/v1/completions",
        completion_body("a" * 5000),
        413,
        None,
        "request_too_large",
    ),
    ("chat-missing-messages", "/v1/chat/completions", {"model": NAME}, 400, "messages", None),
    (
        "chat-bad-role",
        "/v1/chat/completions",
        {"model": NAME, "messages": [{"role": "robot", "content": "hi"}]},
        400,
        "messages",
        None,
    ),
    (
        "chat-over-limit",
        "/v1/chat/completions",
        {
            "model": NAME,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": TOKEN_LIMIT + 1,
        },
        400,
        "max_tokens",
        None,
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_gets_openai_error_and_server_keeps_serving(
    client: httpx.Client,
    served: ServedModel,
    path: str,
    body: Any,
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    if isinstance(body, bytes):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    good = client.post("/v1/completions", json=completion_body("x = ", 3))
    assert good.status_code == 200
    assert good.json()["choices"][0]["text"] == generate_alone(served, "x = ", 3)


def test_openai_client_sees_the_errors(openai_client: OpenAI) -> None:
    import openai

    with pytest.raises(openai.NotFoundError, match="gpt-9"):
        openai_client.completions.create(model="gpt-9", prompt="a", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(model=NAME, prompt="a", max_tokens=0)
    assert caught.value.status_code == 400


def test_request_over_the_time_limit_gets_504(mpt_dir: Path, served: ServedModel) -> None:
    with (
        start_server(serve_config(mpt_dir, request_timeout=1.0), served) as slow,
        httpx.Client(base_url=slow.url, timeout=60) as http,
    ):
        calls = slow.worker.generate_calls
        with slow.worker.paused():
            plain = http.post("/v1/completions", json=completion_body("a", 4))
            streamed = http.post("/v1/completions", json=completion_body("a", 4, stream=True))
        for response in (plain, streamed):
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "timeout"
        good = http.post("/v1/completions", json=completion_body("x = ", 3))
        assert good.json()["choices"][0]["text"] == generate_alone(served, "x = ", 3)
        # The timed-out requests were dropped, not generated after their callers left.
        assert slow.worker.generate_calls - calls == 1


def test_settings_and_missing_folder_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--max_batch_size must be a positive int, got int 0$"):
        ServeConfig(ModelSource("m"), max_batch_size=0)
    with pytest.raises(
        ConfigError, match=r"^--request_timeout must be a positive float, got int 0$"
    ):
        ServeConfig(ModelSource("m"), request_timeout=0)
    with pytest.raises(
        ConfigError, match=r"^--batch_wait_ms must be a non-negative float, got float -1\.0$"
    ):
        ServeConfig(ModelSource("m"), batch_wait_ms=-1.0)
    assert (
        ServeConfig(ModelSource(str(tmp_path / "models" / "my-model") + "/")).served_name
        == "my-model"
    )
    with pytest.raises(MissingFileError, match="missing"):
        load_served_model(ModelSource(str(tmp_path / "missing")))


@pytest.mark.timeout(600)  # a bound on a hung subprocess, not a speed check
def test_serve_script(mpt_dir: Path, served: ServedModel, tmp_path: Path) -> None:
    log = (tmp_path / "stderr.txt").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts/inference/serve.py"),
            "--name_or_path",
            str(mpt_dir),
            "--trust_remote_code",
            "--port",
            "0",
            "--device",
            "cpu",
            "--model_name",
            "scripted",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving 'scripted' on http://127.0.0.1:"), (
            line + (tmp_path / "stderr.txt").read_text()[-2000:]
        )
        url = line.split(" on ")[1].strip()
        with httpx.Client(base_url=url, timeout=120) as http:
            assert http.get("/health").json() == {"status": "ok"}
            body = {**completion_body(PROMPTS[0], 6), "model": "scripted"}
            text = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
        assert text == generate_alone(served, PROMPTS[0], 6)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
        log.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    # A graceful shutdown, then the exit status of a process ended by SIGTERM.
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Finished server process" in stderr and "Traceback" not in stderr
