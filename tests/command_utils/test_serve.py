"""The OpenAI-compatible endpoint: texts equal generating by hand, batching, streaming, errors.

A tiny MPT is exported with its code (``trust_remote_code``) and served in-process on a free
loopback port; requests go through httpx and through the ``openai`` client. Batching is made
deterministic by pausing the worker until every request of a test is queued.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import torch
from openai import OpenAI
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from llmfoundry.inference.chat_template import CHATML_END, render_chat
from llmfoundry.inference.serve import (
    RunningServer,
    ServeConfig,
    ServedModel,
    load_served_model,
    start_server,
)
from llmfoundry.inference.serve_batching import first_stop, held_back_chars
from llmfoundry.models.hf.export import save_mpt_as_hf
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from tests.models.mpt_helpers import tiny_config, tiny_model

REPO = Path(__file__).resolve().parents[2]
NAME = "tiny-mpt"
CONTEXT = 64
TOKEN_LIMIT = 60
PROMPTS = ["def ", "import os\nimport sys\n", "class Parser(object):\n    def", "x = 1"]


def export_tiny_mpt(folder: Path, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A tiny MPT (d_model 64, 2 layers, context 64) with the fixture tokenizer, as an HF folder."""
    model = tiny_model(tiny_config(vocab_size=len(tokenizer), d_model=64, max_seq_len=CONTEXT))
    return save_mpt_as_hf(model, tokenizer, folder, "fp32")


@torch.no_grad()
def generate_alone(
    served: ServedModel, prompt: str, max_tokens: int, add_special_tokens: bool = True
) -> str:
    """Greedy text for ``prompt`` generated on its own (no padding) and decoded by hand."""
    tokenizer = served.tokenizer
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=add_special_tokens)
    output = cast(Any, served.model).generate(
        **ids,
        max_new_tokens=max_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return str(tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


def completion_body(prompt: Any, max_tokens: Any = 8, **extra: Any) -> dict[str, Any]:
    """A greedy completion request."""
    return {"model": NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}


def sse_payloads(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON chunks of a streamed response (checking the ``data:`` framing and ``[DONE]``)."""
    payloads: list[dict[str, Any]] = []
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        payloads.append(json.loads(event.removeprefix("data: ")))
    return payloads


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait (up to 60 s) for ``condition``; the bound only guards against a hang."""
    for _ in range(6000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(scope="module")
def mpt_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    return export_tiny_mpt(tmp_path_factory.mktemp("serve") / NAME, tokenizer)


@pytest.fixture(scope="module")
def served(mpt_dir: Path) -> ServedModel:
    return load_served_model(ServeConfig(str(mpt_dir), trust_remote_code=True, device="cpu"))


def _config(mpt_dir: Path, **overrides: Any) -> ServeConfig:
    settings: dict[str, Any] = {
        "port": 0,
        "trust_remote_code": True,
        "device": "cpu",
        "max_new_tokens_limit": TOKEN_LIMIT,
        "max_prompts_per_request": 4,
        "max_body_bytes": 4096,
        "access_log": False,
        **overrides,
    }
    return ServeConfig(str(mpt_dir), **settings)


@pytest.fixture(scope="module")
def server(mpt_dir: Path, served: ServedModel) -> Iterator[RunningServer]:
    running = start_server(_config(mpt_dir), served)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def openai_client(server: RunningServer) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


def test_health_and_models(client: httpx.Client, openai_client: OpenAI) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [model["id"] for model in listing["data"]] == [NAME]  # the folder's name
    assert [model.id for model in openai_client.models.list()] == [NAME]


def test_greedy_completion_equals_generate(
    client: httpx.Client, openai_client: OpenAI, served: ServedModel
) -> None:
    prompt = PROMPTS[2]
    expected = generate_alone(served, prompt, 12)
    response = client.post("/v1/completions", json=completion_body(prompt, 12))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "text_completion" and body["model"] == NAME
    assert body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    assert choice["text"] == expected
    assert choice["index"] == 0
    prompt_tokens = len(served.tokenizer(prompt)["input_ids"])
    completion_tokens = body["usage"]["completion_tokens"]
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    # 12 tokens unless the model ended the text itself.
    assert completion_tokens <= 12
    assert choice["finish_reason"] == ("length" if completion_tokens == 12 else "stop")

    via_openai = openai_client.completions.create(
        model=NAME, prompt=prompt, max_tokens=12, temperature=0
    )
    assert via_openai.choices[0].text == expected

    echoed = client.post("/v1/completions", json=completion_body(prompt, 12, echo=True)).json()
    assert echoed["choices"][0]["text"] == prompt + expected


def test_prompt_list_gets_one_choice_each(client: httpx.Client, served: ServedModel) -> None:
    body = client.post("/v1/completions", json=completion_body(PROMPTS[:3], 7)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["text"] for c in body["choices"]] == [
        generate_alone(served, p, 7) for p in PROMPTS[:3]
    ]


def test_stop_string_cuts_the_text(client: httpx.Client, served: ServedModel) -> None:
    full = generate_alone(served, PROMPTS[1], 16)
    # A stop string taken from the middle of the greedy text (plain characters, 2 long).
    start = next(i for i in range(3, len(full) - 2) if "\ufffd" not in full[i : i + 2])
    stop = full[start : start + 2]
    body = client.post(
        "/v1/completions", json=completion_body(PROMPTS[1], 16, stop=[stop, "never-seen"])
    ).json()
    (choice,) = body["choices"]
    assert choice["text"] == full[: full.index(stop)]
    assert choice["finish_reason"] == "stop"


def test_chat_equals_generating_from_render_chat(
    openai_client: OpenAI, served: ServedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    # (ChatML costs many tokens with the fixture's 512-token vocabulary: keep it short.)
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    expected = generate_alone(served, render_chat(tokenizer, messages), 10)
    expected = expected.split(CHATML_END)[0]
    reply = openai_client.chat.completions.create(
        model=NAME,
        messages=messages,
        max_tokens=10,
        temperature=0,
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(
        tokenizer(render_chat(tokenizer, messages))["input_ids"]
    )


def test_streamed_chunks_concatenate_to_the_text(
    client: httpx.Client, openai_client: OpenAI, served: ServedModel
) -> None:
    prompt = PROMPTS[0]
    whole = client.post("/v1/completions", json=completion_body(prompt, 14)).json()["choices"][0]
    chunks = sse_payloads(
        client,
        "/v1/completions",
        completion_body(prompt, 14, stream=True, stream_options={"include_usage": True}),
    )
    assert all(c["object"] == "text_completion" for c in chunks)
    texts = [c["choices"][0]["text"] for c in chunks if c["choices"]]
    assert len([t for t in texts if t]) > 1, "text arrives in pieces"
    assert "".join(texts) == whole["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == whole[
        "finish_reason"
    ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0

    # With a stop string, the stream holds back what might become it and never sends it.
    full = generate_alone(served, prompt, 14)
    stop = full[5:7]
    with_stop = client.post("/v1/completions", json=completion_body(prompt, 14, stop=stop))
    streamed = openai_client.completions.create(
        model=NAME, prompt=prompt, max_tokens=14, temperature=0, stop=stop, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == with_stop.json()["choices"][0]["text"]

    chat = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}
    chat_whole = client.post("/v1/chat/completions", json={**chat, "temperature": 0}).json()
    chat_stream = list(
        openai_client.chat.completions.create(
            model=NAME,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=9,
            temperature=0,
            stream=True,
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chat_stream)
    assert chat_stream[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chat_stream)
    assert content == chat_whole["choices"][0]["message"]["content"]
    assert chat_stream[-1].choices[0].finish_reason == chat_whole["choices"][0]["finish_reason"]


def _post_text(url: str, body: dict[str, Any]) -> str:
    """The text of a completion, streamed or not, fetched on its own connection."""
    with httpx.Client(base_url=url, timeout=120) as http:
        if body.get("stream"):
            return "".join(
                c["choices"][0]["text"] for c in sse_payloads(http, "/v1/completions", body)
            )
        response = http.post("/v1/completions", json=body)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]


def test_concurrent_requests_share_one_generate_call(
    server: RunningServer, served: ServedModel
) -> None:
    lengths = [6, 11, 3, 9]
    bodies = [
        completion_body(prompt, n, stream=(i == 1))
        for i, (prompt, n) in enumerate(zip(PROMPTS, lengths, strict=True))
    ]
    expected = [generate_alone(served, p, n) for p, n in zip(PROMPTS, lengths, strict=True)]
    calls = server.worker.generate_calls
    with ThreadPoolExecutor(len(bodies)) as pool:
        with server.worker.paused():
            futures = [pool.submit(_post_text, server.url, body) for body in bodies]
            wait_until(lambda: server.worker.pending() == len(bodies), "all requests queued")
        texts = [future.result() for future in futures]
    assert texts == expected, "each prompt's text is the one it gets alone"
    assert server.worker.generate_calls - calls == 1


def test_sampled_requests_run_apart_and_repeat_with_a_seed(server: RunningServer) -> None:
    sampled = completion_body(PROMPTS[0], 10, temperature=1.0, seed=5)
    calls = server.worker.generate_calls
    with ThreadPoolExecutor(4) as pool:
        with server.worker.paused():
            futures = [
                pool.submit(_post_text, server.url, body)
                for body in (
                    sampled,
                    sampled,
                    completion_body(PROMPTS[1]),
                    completion_body(PROMPTS[2]),
                )
            ]
            wait_until(lambda: server.worker.pending() == 4, "all requests queued")
        texts = [future.result() for future in futures]
    # Two sampled requests alone, the greedy two together.
    assert server.worker.generate_calls - calls == 3
    assert texts[0] == texts[1], "the same seed gives the same text"


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
        start_server(_config(mpt_dir, request_timeout=1.0), served) as slow,
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


def test_transformers_native_model_batches_like_alone(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    folder = tmp_path / "tiny-llama"
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=CONTEXT,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with start_server(_config(folder, trust_remote_code=False)) as llama:
        assert llama.served.context_length == CONTEXT
        expected = [generate_alone(llama.served, p, 8) for p in PROMPTS[:3]]
        with ThreadPoolExecutor(3) as pool:
            with llama.worker.paused():
                futures = [
                    pool.submit(
                        _post_text, llama.url, {**completion_body(p, 8), "model": "tiny-llama"}
                    )
                    for p in PROMPTS[:3]
                ]
                wait_until(lambda: llama.worker.pending() == 3, "all requests queued")
            assert [f.result() for f in futures] == expected
        assert llama.worker.generate_calls == 1


def test_stream_holds_back_possible_stop_strings() -> None:
    assert first_stop("abc<|im_end|>x", ["<|im_end|>", "c"]) == 2
    assert first_stop("abc", ["d"]) is None
    assert held_back_chars("hello <|im", ["<|im_end|>"]) == 4
    assert held_back_chars("hello <", ["<|im_end|>", "lo <!"]) == 4  # "lo <" starts "lo <!"
    assert held_back_chars("caf\ufffd", []) == 1  # half of a multi-byte character
    assert held_back_chars("hello", ["<|im_end|>"]) == 0


def test_settings_and_missing_folder_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--max_batch_size"):
        ServeConfig("m", max_batch_size=0)
    with pytest.raises(ConfigError, match="--request_timeout"):
        ServeConfig("m", request_timeout=0)
    assert ServeConfig(str(tmp_path / "models" / "my-model") + "/").served_name == "my-model"
    with pytest.raises(MissingFileError, match="missing"):
        load_served_model(ServeConfig(str(tmp_path / "missing")))


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
