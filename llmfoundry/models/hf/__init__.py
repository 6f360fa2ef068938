"""Composer-facing model wrappers; importing this registers our MPT with transformers' Auto classes."""

from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM
from llmfoundry.models.hf.hf_causal_lm import ComposerHFCausalLM
from llmfoundry.models.hf.hf_t5 import ComposerHFT5
from llmfoundry.models.hf.loading import register_auto_classes

register_auto_classes()

__all__ = ["ComposerHFCausalLM", "ComposerHFT5", "ComposerMPTCausalLM"]
