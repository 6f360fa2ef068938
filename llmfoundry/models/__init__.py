"""Models: the standalone MPT implementation and its Composer wrappers (registered by name)."""

from llmfoundry.models.hf import ComposerMPTCausalLM
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

__all__ = ["ComposerMPTCausalLM", "MPTConfig", "MPTForCausalLM"]
