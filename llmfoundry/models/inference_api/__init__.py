"""Models behind an OpenAI-compatible API, for evaluation (``openai_causal_lm``, ``openai_chat``,
and on a Foundation Model API endpoint ``fmapi_causal_lm``, ``fmapi_chat``)."""

from llmfoundry import registry
from llmfoundry.models.inference_api.client import OpenAIClient
from llmfoundry.models.inference_api.fmapi import FMAPICasualLMEvalWrapper, FMAPIChatAPIEvalWrapper
from llmfoundry.models.inference_api.wrappers import (
    InferenceAPIEvalWrapper,
    OpenAICausalLMEvalWrapper,
    OpenAIChatAPIEvalWrapper,
)

registry.models.register("openai_causal_lm", func=OpenAICausalLMEvalWrapper)
registry.models.register("openai_chat", func=OpenAIChatAPIEvalWrapper)
registry.models.register("fmapi_causal_lm", func=FMAPICasualLMEvalWrapper)
registry.models.register("fmapi_chat", func=FMAPIChatAPIEvalWrapper)

__all__ = [
    "FMAPICasualLMEvalWrapper",
    "FMAPIChatAPIEvalWrapper",
    "InferenceAPIEvalWrapper",
    "OpenAICausalLMEvalWrapper",
    "OpenAIChatAPIEvalWrapper",
    "OpenAIClient",
]
