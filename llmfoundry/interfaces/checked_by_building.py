"""A mixin for components the run's config check may build: their constructor's checks then
fail before the model is built, not after."""

from __future__ import annotations

import logging
from typing import Any


class CheckedByBuilding:
    """Mixin for a registered component whose constructor is cheap and touches nothing (no
    files, network, devices or process state).

    The config check (:func:`llmfoundry.utils.config_components.check_call_kwargs`) calls
    ``check_before_build(**kwargs)`` with the section's keys: this one builds the component and
    drops it, with warnings held back (the real build gives them).
    """

    @classmethod
    def check_before_build(cls, **kwargs: Any) -> None:
        """Build one from ``kwargs`` and drop it.

        Raises:
            ConfigError: whatever the constructor raises.
        """
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            cls(**kwargs)
        finally:
            logging.disable(previous)
