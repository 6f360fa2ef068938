"""endpoint_generate: a prompts file sent to the endpoint becomes one JSONL result per prompt.

The served model is the tiny MPT of ``test_serve``; retries are checked against an httpx mock
transport that fails on purpose.
"""

from __future__ import annotations

import json
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.inference.client import (
    generate_from_endpoint,
    query_endpoint,
    read_prompts_file,
    resolve_endpoint,
)
from llmfoundry.inference.serve import ModelSource, RunningServer, ServeConfig, start_server
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from tests import REPO
from tests.inference.serve_helpers import NAME, export_tiny_mpt

PROMPTS = ["def ", "import os", "class A:", "x = [1, 2", "héllo wörld", "    return"]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> Iterator[RunningServer]:
    folder = export_tiny_mpt(tmp_path_factory.mktemp("client") / NAME, tokenizer)
    source = ModelSource(str(folder), trust_remote_code=True, device="cpu")
    config = ServeConfig(source, port=0, access_log=False)
    running = start_server(config)
    yield running
    running.stop()


def _server_text(server: RunningServer, prompt: str, max_tokens: int, chat: bool = False) -> str:
    """What the server answers for ``prompt`` when asked directly."""
    body = {"model": NAME, "max_tokens": max_tokens, "temperature": 0}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    path = "/v1/chat/completions" if chat else "/v1/completions"
    choice = httpx.post(server.url + path, json=body, timeout=60).json()["choices"][0]
    return choice["message"]["content"] if chat else choice["text"]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prompts_file_gives_results_in_input_order(server: RunningServer, tmp_path: Path) -> None:
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS[:3]) + "\n\n" + "\n".join(PROMPTS[3:]) + "\n")
    output = tmp_path / "out" / "results.jsonl"
    summary = generate_from_endpoint(
        prompts_file, output, server.url + "/v1/completions", max_tokens=6, parallel=3
    )
    rows = _read_jsonl(output)
    assert [row["prompt"] for row in rows] == PROMPTS, "blank lines skipped, order kept"
    assert [row["text"] for row in rows] == [_server_text(server, p, 6) for p in PROMPTS]
    for row in rows:
        assert set(row) == {"prompt", "text", "finish_reason", "latency_s", "error"}
        assert row["error"] is None
        assert row["finish_reason"] in ("stop", "length")
        assert row["latency_s"] > 0
    assert summary.failed == 0
    assert summary.line().startswith(f"{len(PROMPTS)} prompts: {len(PROMPTS)} ok, 0 failed")
    assert [p.name for p in output.parent.iterdir()] == ["results.jsonl"], "no temporary left"


def test_jsonl_prompts_to_the_chat_api(server: RunningServer, tmp_path: Path) -> None:
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text(
        "".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS[:3]))
    )
    output = tmp_path / "chat.jsonl"
    # The base URL is enough: the model name is read from /v1/models.
    generate_from_endpoint(prompts_file, output, server.url, chat=True, max_tokens=5, parallel=2)
    rows = _read_jsonl(output)
    assert [row["text"] for row in rows] == [
        _server_text(server, p, 5, chat=True) for p in PROMPTS[:3]
    ]


def test_script_writes_output_and_prints_summary(
    server: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("def \nimport os\n")
    output = tmp_path / "script.jsonl"
    argv = ["endpoint_generate.py", "--prompts", str(prompts_file), "--endpoint", server.url]
    argv += ["--output", str(output), "--max_tokens", "4", "--model", NAME]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(REPO / "scripts/inference/endpoint_generate.py"), run_name="__main__")
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("2 prompts: 2 ok, 0 failed")
    assert [row["text"] for row in _read_jsonl(output)] == [
        _server_text(server, p, 4) for p in ("def ", "import os")
    ]


def _answer(request: httpx.Request) -> httpx.Response:
    prompt = json.loads(request.content)["prompt"]
    return httpx.Response(
        200, json={"choices": [{"text": prompt.upper(), "finish_reason": "length"}]}
    )


def test_retries_server_errors_and_connection_failures() -> None:
    calls: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["prompt"]
        calls[prompt] = calls.get(prompt, 0) + 1
        if prompt == "flaky" and calls[prompt] <= 2:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        if prompt == "refused" or (prompt == "drops" and calls[prompt] == 1):
            raise httpx.ConnectError("connection refused", request=request)
        if prompt == "bad":
            return httpx.Response(400, json={"error": {"message": "'max_tokens' is too large"}})
        return _answer(request)

    results = query_endpoint(
        ["flaky", "drops", "bad", "refused", "fine"],
        "http://127.0.0.1:9/v1/completions",
        model="m",
        retries=2,
        backoff_s=0,
        transport=httpx.MockTransport(handler),
    )
    by_prompt = {result.prompt: result for result in results}
    assert [r.prompt for r in results] == ["flaky", "drops", "bad", "refused", "fine"]
    assert by_prompt["flaky"].text == "FLAKY" and by_prompt["flaky"].error is None
    assert by_prompt["drops"].text == "DROPS"
    assert by_prompt["bad"].error == "HTTP 400: 'max_tokens' is too large"
    assert by_prompt["refused"].text is None
    assert "ConnectError" in str(by_prompt["refused"].error)
    assert "after 3 attempts" in str(by_prompt["refused"].error)
    # 503 twice then success; a 400 is not retried; a refused connection: 1 + 2 retries.
    assert calls == {"flaky": 3, "drops": 2, "bad": 1, "refused": 3, "fine": 1}


def test_prompt_files_and_endpoints_are_checked(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="missing.txt"):
        read_prompts_file(tmp_path / "missing.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: .*'prompt'"):
        read_prompts_file(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="holds no prompts"):
        read_prompts_file(empty)
    assert resolve_endpoint("http://h:1") == ("http://h:1/v1/completions", False)
    assert resolve_endpoint("http://h:1/v1/", chat=True) == ("http://h:1/v1/chat/completions", True)
    assert resolve_endpoint("http://h:1/v1/chat/completions") == (
        "http://h:1/v1/chat/completions",
        True,
    )
    with pytest.raises(ConfigError, match="--endpoint"):
        resolve_endpoint("h:1/v1/completions")
    with pytest.raises(ConfigError, match=r"^--parallel must be a positive int, got int 0$"):
        query_endpoint(["a"], "http://h:1", model="m", parallel=0)
    with pytest.raises(ConfigError, match=r"^--retries must be a non-negative int, got int -1$"):
        query_endpoint(["a"], "http://h:1", model="m", retries=-1)
