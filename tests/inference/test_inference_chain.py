"""One trained model, four ways to run it: the Composer checkpoint, the converted Hugging Face
folder, its ONNX export and the OpenAI-compatible endpoint all write the same greedy text."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from llmfoundry.command_utils.convert_composer_to_hf import (
    convert_composer_to_hf,
    mpt_config_from_checkpoint,
    mpt_model_from_checkpoint,
)
from llmfoundry.command_utils.convert_hf_to_onnx import convert_hf_to_onnx, onnx_greedy_generate
from llmfoundry.inference.serve import ModelSource, ServeConfig, start_server
from llmfoundry.utils.checkpoint_utils import load_composer_checkpoint
from tests.command_utils.conftest import TrainedRun
from tests.fixtures import greedy_continuation

PROMPTS = ["def load(path):\n    ", "import json\n\nclass Decoder"]
NEW_TOKENS = 10


def test_checkpoint_hf_folder_onnx_and_endpoint_agree(
    tmp_path: Path,
    trained_run: TrainedRun,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    checkpoint = str(trained_run.checkpoint)
    state = load_composer_checkpoint(checkpoint)
    composer_model = mpt_model_from_checkpoint(state, mpt_config_from_checkpoint(state, checkpoint))
    expected = [
        greedy_continuation(composer_model, tokenizer, prompt, NEW_TOKENS) for prompt in PROMPTS
    ]
    assert all(text.strip() for text in expected)  # something to compare

    hf_dir = convert_composer_to_hf(checkpoint, str(tmp_path / "hf"))
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=True).eval()
    assert [
        greedy_continuation(hf_model, tokenizer, prompt, NEW_TOKENS) for prompt in PROMPTS
    ] == expected

    onnx = convert_hf_to_onnx(str(hf_dir), str(tmp_path / "onnx"), trust_remote_code=True)
    assert [
        onnx_greedy_generate(onnx.onnx_path, tokenizer, prompt, NEW_TOKENS) for prompt in PROMPTS
    ] == expected

    config = ServeConfig(ModelSource(str(hf_dir), trust_remote_code=True, device="cpu"), port=0)
    with start_server(config) as server:
        # Both prompts in one request: the endpoint batches them with left padding.
        response = httpx.post(
            f"{server.url}/v1/completions",
            json={"model": "hf", "prompt": PROMPTS, "max_tokens": NEW_TOKENS, "temperature": 0},
            timeout=120,
        )
    assert response.status_code == 200, response.text
    choices = sorted(response.json()["choices"], key=lambda choice: choice["index"])
    assert [choice["text"] for choice in choices] == expected


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
