"""Models: the standalone MPT implementation and its Composer wrappers (registered by name)."""

from llmfoundry.models.hf import ComposerHFCausalLM, ComposerHFT5, ComposerMPTCausalLM
from llmfoundry.models.inference_api import (
    FMAPICasualLMEvalWrapper,
    FMAPIChatAPIEvalWrapper,
    OpenAICausalLMEvalWrapper,
    OpenAIChatAPIEvalWrapper,
)
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM, MPTModel, MPTPreTrainedModel

__all__ = [
    "ComposerHFCausalLM",
    "ComposerHFT5",
    "ComposerMPTCausalLM",
    "FMAPICasualLMEvalWrapper",
    "FMAPIChatAPIEvalWrapper",
    "MPTConfig",
    "MPTForCausalLM",
    "MPTModel",
    "MPTPreTrainedModel",
    "OpenAICausalLMEvalWrapper",
    "OpenAIChatAPIEvalWrapper",
]
