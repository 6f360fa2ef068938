"""Base classes for plug-in components (LLM Foundry's ``llmfoundry.interfaces``)."""

from llmfoundry.interfaces.callback_with_config import CallbackWithConfig

__all__ = ["CallbackWithConfig"]
