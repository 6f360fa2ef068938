"""endpoint_generate in LLM Foundry's form: -i prompts in batches to -e, a CSV written to -o."""

from __future__ import annotations

import csv
import json
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.inference.client import RequestSettings
from llmfoundry.inference.endpoint_batches import BatchedQuery, generate_csv_from_endpoint
from llmfoundry.inference.serve import ModelSource, RunningServer, ServeConfig, start_server
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.http_client import RetryPolicy
from tests import REPO
from tests.fixtures import BUCKET
from tests.inference.serve_helpers import NAME, export_tiny_mpt

PROMPTS = ["def ", "import os", "class A:", "x = [1, 2", "    return"]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> Iterator[RunningServer]:
    folder = export_tiny_mpt(tmp_path_factory.mktemp("batches") / NAME, tokenizer)
    running = start_server(
        ServeConfig(ModelSource(str(folder), trust_remote_code=True, device="cpu"), port=0)
    )
    yield running
    running.stop()


def _greedy(server: RunningServer, prompt: str, max_tokens: int) -> str:
    body = {"model": NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()["choices"][0][
        "text"
    ]


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_script_sends_batches_and_writes_lf_csv(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(PROMPTS[1:]) + "\n", encoding="utf-8")
    output = tmp_path / "out" / "results.csv"
    monkeypatch.setenv("ENDPOINT_URL", server.url + "/v1/completions")  # no -e: read from here
    argv = ["endpoint_generate.py", "-i", PROMPTS[0], f"file::{prompt_file}", "-o", str(output)]
    # Our server, as OpenAI's API, wants the model named; LLM Foundry's form sends --model if given.
    argv += ["--batch-size", "2", "--max-tokens", "5", "--temperature", "0", "--model", NAME]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(REPO / "scripts/inference/endpoint_generate.py"), run_name="__main__")
    assert exited.value.code == 0
    rows = _rows(output)
    assert rows[0] == ["batch", "prompt", "output"]
    assert [row[:2] for row in rows[1:]] == [
        [str(i // 2), prompt] for i, prompt in enumerate(PROMPTS)
    ]
    # A list prompt per request: each choice goes back to its own prompt.
    assert [row[2] for row in rows[1:]] == [_greedy(server, p, 5) for p in PROMPTS]


def test_requests_carry_lf_defaults_and_the_raw_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[dict[str, Any], str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((body, request.headers.get("Authorization")))
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = [
            {"index": i, "text": p[::-1], "finish_reason": "length"} for i, p in enumerate(prompts)
        ]
        return httpx.Response(200, json={"choices": choices[::-1]})  # any order: by index

    monkeypatch.setenv("ENDPOINT_API_KEY", "Bearer dapi-123")
    prompts = [f"p{i}" for i in range(12)]
    summary = generate_csv_from_endpoint(
        prompts, tmp_path / "o.csv", "https://host/serving-endpoints/m/invocations",
        transport=httpx.MockTransport(handler),
    )  # fmt: skip
    assert summary.failed == 0
    bodies = [body for body, _ in seen]
    assert sorted(len(body["prompt"]) for body in bodies) == [2, 10]  # --batch-size 10
    assert {key: bodies[0][key] for key in ("max_tokens", "temperature", "top_k", "top_p")} == {
        "max_tokens": 100,
        "temperature": 1.0,
        "top_k": 50,
        "top_p": 1.0,
    }
    assert all("model" not in body for body in bodies)
    assert {key for _, key in seen} == {"Bearer dapi-123"}  # the header as the variable holds it
    assert [row[2] for row in _rows(tmp_path / "o.csv")[1:]] == [p[::-1] for p in prompts]


def test_object_store_inputs_are_read_and_the_csv_uploaded(tmp_path: Path, s3: Any) -> None:
    # As LLM Foundry's script: an s3:// input is a prompt file; an s3:// -o folder gets output.csv.
    s3.put_object(Bucket=BUCKET, Key="prompts/p.txt", Body=b"first\nsecond\n")

    def handler(request: httpx.Request) -> httpx.Response:
        prompts = json.loads(request.content)["prompt"]
        prompts = prompts if isinstance(prompts, list) else [prompts]
        choices = [
            {"index": i, "text": p.upper(), "finish_reason": "length"}
            for i, p in enumerate(prompts)
        ]
        return httpx.Response(200, json={"choices": choices})

    summary = generate_csv_from_endpoint(
        ["typed", f"s3://{BUCKET}/prompts/p.txt"], f"s3://{BUCKET}/results", "http://h/v1",
        transport=httpx.MockTransport(handler),
    )  # fmt: skip
    assert summary.output == f"s3://{BUCKET}/results/output.csv"
    s3.download_file(BUCKET, "results/output.csv", str(tmp_path / "out.csv"))
    assert _rows(tmp_path / "out.csv") == [
        ["batch", "prompt", "output"],
        ["0", "typed", "TYPED"],
        ["0", "first", "FIRST"],
        ["0", "second", "SECOND"],
    ]


def test_a_prompt_the_answer_left_out_is_a_failed_prompt(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:  # answers the first prompt only
        return httpx.Response(
            200, json={"choices": [{"index": 0, "text": "x", "finish_reason": "stop"}]}
        )

    summary = generate_csv_from_endpoint(
        ["a", "b"], tmp_path / "o.csv", "http://h/v1", transport=httpx.MockTransport(handler)
    )
    assert [r.error for r in summary.results] == [None, "the answer holds no choice for it"]


def test_the_rate_limit_spaces_request_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("llmfoundry.inference.client.time.sleep", slept.append)
    settings = RequestSettings("u", False, {}, RetryPolicy(0, 0, frozenset()), min_interval_s=0.5)
    for _ in range(4):
        settings.wait_for_turn()
    # Started back to back: each waits half a second more than the one before.
    assert [round(s, 1) for s in slept] == [0.0, 0.5, 1.0, 1.5]


def test_bad_settings_fail_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENDPOINT_URL", raising=False)
    with pytest.raises(ConfigError, match=r"-e/--endpoint or \$ENDPOINT_URL"):
        generate_csv_from_endpoint(["a"], tmp_path / "o.csv")
    with pytest.raises(ConfigError, match=r"--batch-size 20 is larger than --rate-limit 5"):
        BatchedQuery(batch_size=20, rate_limit=5)
    from llmfoundry.cli.commands.endpoint_generate import build_parser, query

    mixed = build_parser().parse_args(["--prompts", "p.txt", "-o", "o.csv"])
    with pytest.raises(ConfigError, match=r"--prompts_file .* and --output_folder .* use one form"):
        query(mixed)
    ours = build_parser().parse_args(
        ["--prompts", "p", "--endpoint", "http://h", "--output", "o", "--top-k", "5"]
    )
    with pytest.raises(ConfigError, match=r"--top_k applies to LLM Foundry's form"):
        query(ours)
