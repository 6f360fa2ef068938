"""Tokenizers registered by name (``tokenizer: {name: tiktoken, kwargs: {...}}``)."""

from llmfoundry import registry
from llmfoundry.tokenizers.tiktoken import TiktokenTokenizerWrapper

registry.tokenizers.register("tiktoken", func=TiktokenTokenizerWrapper)

__all__ = ["TiktokenTokenizerWrapper"]
