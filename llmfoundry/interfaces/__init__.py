"""Base classes for plug-in components (LLM Foundry's ``llmfoundry.interfaces``)."""

from llmfoundry.interfaces.callback_with_config import CallbackWithConfig
from llmfoundry.interfaces.checked_by_building import CheckedByBuilding

__all__ = ["CallbackWithConfig", "CheckedByBuilding"]
