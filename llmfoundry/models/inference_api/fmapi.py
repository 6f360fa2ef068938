"""LLM Foundry's ``fmapi_causal_lm`` / ``fmapi_chat``: the OpenAI-API eval wrappers pointed at a
Databricks Foundation Model API (or a local MosaicML model endpoint).

The endpoint is ``model.base_url``, or with ``model.local: true`` the URL in
``$MOSAICML_MODEL_ENDPOINT`` (default ``http://0.0.0.0:8080/v2``); the API key is read from
``$MOSAICML_API_KEY``. Everything else is as ``openai_causal_lm`` / ``openai_chat``.
"""

from __future__ import annotations

import os

from transformers import PreTrainedTokenizerBase

from llmfoundry.models.inference_api.client import OpenAIClient
from llmfoundry.models.inference_api.wrappers import (
    DEFAULT_LOGPROBS,
    DEFAULT_SYSTEM_ROLE_PROMPT,
    OpenAICausalLMEvalWrapper,
    OpenAIChatAPIEvalWrapper,
)
from llmfoundry.utils.config_checks import NonNegativeInt, PositiveFloat, PositiveInt
from llmfoundry.utils.exceptions import ConfigError

API_KEY_ENV = "MOSAICML_API_KEY"
LOCAL_ENDPOINT_ENV = "MOSAICML_MODEL_ENDPOINT"
LOCAL_ENDPOINT = "http://0.0.0.0:8080/v2"


def fmapi_client(
    base_url: str | None, local: bool, timeout: float, max_retries: int
) -> OpenAIClient:
    """The client of a Foundation Model API endpoint (see the module docstring).

    Raises:
        ConfigError: without ``base_url`` unless ``local``.
    """
    if local:
        base_url = os.environ.get(LOCAL_ENDPOINT_ENV, LOCAL_ENDPOINT)
    elif base_url is None:
        raise ConfigError(
            "the fmapi_* models need model.base_url (the Foundation Model API's URL), or "
            f"model.local: true for ${LOCAL_ENDPOINT_ENV} (default {LOCAL_ENDPOINT})"
        )
    return OpenAIClient(base_url, timeout=timeout, max_retries=max_retries, api_key_env=API_KEY_ENV)


class FMAPICasualLMEvalWrapper(OpenAICausalLMEvalWrapper):
    """``fmapi_causal_lm``: :class:`OpenAICausalLMEvalWrapper` on a Foundation Model API
    endpoint (LLM Foundry spells the class name so)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        version: str | None = None,
        base_url: str | None = None,
        local: bool = False,
        logprobs: PositiveInt = DEFAULT_LOGPROBS,
        timeout: PositiveFloat = 120.0,
        max_retries: NonNegativeInt = 10,
        client: OpenAIClient | None = None,
    ) -> None:
        client = client or fmapi_client(base_url, local, timeout, max_retries)
        super().__init__(tokenizer, version, base_url, logprobs, timeout, max_retries, client)


class FMAPIChatAPIEvalWrapper(OpenAIChatAPIEvalWrapper):
    """``fmapi_chat``: :class:`OpenAIChatAPIEvalWrapper` on a Foundation Model API endpoint."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        version: str | None = None,
        base_url: str | None = None,
        local: bool = False,
        system_role_prompt: str = DEFAULT_SYSTEM_ROLE_PROMPT,
        timeout: PositiveFloat = 120.0,
        max_retries: NonNegativeInt = 10,
        client: OpenAIClient | None = None,
    ) -> None:
        client = client or fmapi_client(base_url, local, timeout, max_retries)
        super().__init__(
            tokenizer, version, base_url, system_role_prompt, timeout, max_retries, client
        )
