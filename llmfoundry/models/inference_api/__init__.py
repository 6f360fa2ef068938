"""Models behind an OpenAI-compatible API, for evaluation (``openai_causal_lm``, ``openai_chat``)."""

from llmfoundry import registry
from llmfoundry.models.inference_api.client import OpenAIClient
from llmfoundry.models.inference_api.wrappers import (
    InferenceAPIEvalWrapper,
    OpenAICausalLMEvalWrapper,
    OpenAIChatAPIEvalWrapper,
)

registry.models.register("openai_causal_lm", func=OpenAICausalLMEvalWrapper)
registry.models.register("openai_chat", func=OpenAIChatAPIEvalWrapper)

__all__ = [
    "InferenceAPIEvalWrapper",
    "OpenAICausalLMEvalWrapper",
    "OpenAIChatAPIEvalWrapper",
    "OpenAIClient",
]
