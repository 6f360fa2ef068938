"""fmapi_causal_lm / fmapi_chat: the OpenAI-API eval wrappers on a Foundation Model API
endpoint: the URL from model.base_url or, with local: true, $MOSAICML_MODEL_ENDPOINT, and the
key from $MOSAICML_API_KEY."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.models.inference_api import FMAPICasualLMEvalWrapper, FMAPIChatAPIEvalWrapper
from llmfoundry.utils.exceptions import ConfigError


def test_registered_under_llm_foundry_names() -> None:
    assert registry.models.get("fmapi_causal_lm") is FMAPICasualLMEvalWrapper
    assert registry.models.get("fmapi_chat") is FMAPIChatAPIEvalWrapper


def test_endpoint_and_key(
    tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOSAICML_API_KEY", "secret-key")
    monkeypatch.setenv("OPENAI_API_KEY", "not-this-one")
    chat = FMAPIChatAPIEvalWrapper(tokenizer, version="m", base_url="http://host:1/v1/")
    assert chat.client.base_url == "http://host:1/v1"
    assert chat.client._client.headers["Authorization"] == "Bearer secret-key"
    monkeypatch.setenv("MOSAICML_MODEL_ENDPOINT", "http://127.0.0.1:9/v2")
    local = FMAPICasualLMEvalWrapper(tokenizer, version="m", local=True)
    assert local.client.base_url == "http://127.0.0.1:9/v2"
    monkeypatch.delenv("MOSAICML_MODEL_ENDPOINT")
    default = FMAPICasualLMEvalWrapper(tokenizer, version="m", local=True)
    assert default.client.base_url == "http://0.0.0.0:8080/v2"


def test_needs_a_url_unless_local(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ConfigError, match=r"need model\.base_url .* or model\.local: true"):
        FMAPICasualLMEvalWrapper(tokenizer, version="m")
