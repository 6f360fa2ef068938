"""What the endpoint tests share: a tiny MPT export, the test server's settings and helpers
that build requests and read streamed answers (the fixtures that serve it are in this
folder's ``conftest.py``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry.inference.serve import (
    ModelSource,
    ServeConfig,
    ServedModel,
)
from llmfoundry.models.hf.export import save_mpt_as_hf
from tests.fixtures import tiny_config, tiny_model

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


def serve_config(mpt_dir: Path, **overrides: Any) -> ServeConfig:
    """The test server's settings (a free loopback port, CPU, small limits) with ``overrides``."""
    trust_remote_code = overrides.pop("trust_remote_code", True)
    source = ModelSource(str(mpt_dir), trust_remote_code=trust_remote_code, device="cpu")
    settings: dict[str, Any] = {
        "port": 0,
        "max_new_tokens_limit": TOKEN_LIMIT,
        "max_prompts_per_request": 4,
        "max_body_bytes": 4096,
        "access_log": False,
        **overrides,
    }
    return ServeConfig(source, **settings)
