"""Composer-facing model wrappers."""

from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM

__all__ = ["ComposerMPTCausalLM"]
