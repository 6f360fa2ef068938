"""Composer-facing model wrappers."""

from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM
from llmfoundry.models.hf.hf_causal_lm import ComposerHFCausalLM

__all__ = ["ComposerHFCausalLM", "ComposerMPTCausalLM"]
