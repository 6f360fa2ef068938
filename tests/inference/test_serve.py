"""The OpenAI-compatible endpoint: texts equal generating by hand, batching, streaming.

A tiny MPT is exported with its code (``trust_remote_code``) and served in-process on a free
loopback port (:mod:`tests.inference.serve_helpers`); requests go through httpx and through the
``openai`` client. Batching is made deterministic by pausing the worker until every request of
a test is queued.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI
from transformers import PreTrainedTokenizerBase

from llmfoundry.inference.chat_template import CHATML_END, render_chat
from llmfoundry.inference.serve import (
    RunningServer,
    ServedModel,
    start_server,
)
from llmfoundry.inference.serve_batching import first_stop, held_back_chars
from tests.fixtures import save_llama
from tests.inference.serve_helpers import (
    CONTEXT,
    NAME,
    PROMPTS,
    completion_body,
    generate_alone,
    serve_config,
    sse_payloads,
    wait_until,
)


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


def test_top_k_one_samples_the_greedy_text(server: RunningServer, served: ServedModel) -> None:
    # vLLM's top_k (LLM Foundry's endpoint_generate sends it): sampling among the single
    # likeliest token is greedy decoding, whatever the temperature and seed.
    greedy = generate_alone(served, PROMPTS[0], 10)
    for seed in (1, 2):
        body = completion_body(PROMPTS[0], 10, temperature=1.5, top_k=1, seed=seed)
        assert _post_text(server.url, body) == greedy
    # -1 (vLLM's "all tokens") is accepted; a wrong type is refused naming the field.
    assert _post_text(server.url, completion_body(PROMPTS[0], 3, top_k=-1))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        response = http.post("/v1/completions", json=completion_body(PROMPTS[0], top_k="many"))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "top_k"


def test_transformers_native_model_batches_like_alone(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    folder = tmp_path / "tiny-llama"
    # The seeded tiny Llama with the config's own EOS and pad ids, and the fixture tokenizer.
    save_llama(folder, vocab_size=len(tokenizer), max_position_embeddings=CONTEXT)
    tokenizer.save_pretrained(folder)
    with start_server(serve_config(folder, trust_remote_code=False)) as llama:
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
