"""Models: the standalone MPT implementation and its Composer wrappers (registered by name)."""

from llmfoundry.models.hf import ComposerHFCausalLM, ComposerHFT5, ComposerMPTCausalLM
from llmfoundry.models.inference_api import (
    OpenAICausalLMEvalWrapper,
    OpenAIChatAPIEvalWrapper,
)
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM, MPTModel, MPTPreTrainedModel

__all__ = [
    "ComposerHFCausalLM",
    "ComposerHFT5",
    "ComposerMPTCausalLM",
    "MPTConfig",
    "MPTForCausalLM",
    "MPTModel",
    "MPTPreTrainedModel",
    "OpenAICausalLMEvalWrapper",
    "OpenAIChatAPIEvalWrapper",
]
