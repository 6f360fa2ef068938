"""Models: the standalone MPT implementation and its Composer wrappers (registered by name)."""

from llmfoundry.models.hf import ComposerMPTCausalLM
from llmfoundry.models.inference_api import (
    OpenAICausalLMEvalWrapper,
    OpenAIChatAPIEvalWrapper,
)
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

__all__ = [
    "ComposerMPTCausalLM",
    "MPTConfig",
    "MPTForCausalLM",
    "OpenAICausalLMEvalWrapper",
    "OpenAIChatAPIEvalWrapper",
]
