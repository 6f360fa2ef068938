"""``load_checkpoint``: load a Composer checkpoint at a chosen training event.

Config (an entry of the ``callbacks:`` section)::

    callbacks:
      load_checkpoint:
        load_path: /checkpoints/base/ep1-ba5000-rank0.pt   # or an object-store URI
        load_weights_only: false      # true: the model weights only
        strict_model_weights: true    # every weight must match the model's
        ignore_keys: null             # state paths not to load, e.g. ['state/optimizers']
        event: before_load            # any Composer event name (fit_start, batch_start, ...)

This is Composer's ``LoadCheckpoint`` (as in LLM Foundry), with the event name and a missing
local file reported in one line naming the key.
"""

from __future__ import annotations

from pathlib import Path

from composer.callbacks import LoadCheckpoint as ComposerLoadCheckpoint
from composer.core import Event, State
from composer.loggers import Logger

from llmfoundry.interfaces.checked_by_building import CheckedByBuilding
from llmfoundry.utils.checkpoint_utils import check_load_path
from llmfoundry.utils.exceptions import ConfigError, MissingFileError, did_you_mean
from llmfoundry.utils.object_store import is_remote

__all__ = ["LoadCheckpoint"]

KEY = "callbacks.load_checkpoint"


class LoadCheckpoint(CheckedByBuilding, ComposerLoadCheckpoint):
    """Load the checkpoint at ``load_path`` when ``event`` fires.

    Args:
        load_path: a local ``.pt`` file (or sharded checkpoint folder) or an object-store URI.
        load_weights_only: load only the model weights, not optimizer, scheduler and timestamp.
        strict_model_weights: fail unless the checkpoint's weights match the model's exactly.
        ignore_keys: state paths (glob patterns) left out of the load.
        event: the Composer event name (case-insensitive) or :class:`Event`.

    Raises:
        ConfigError: on an unknown event name.
        MissingFileError: (when the event fires) if a local ``load_path`` does not exist.
    """

    def __init__(
        self,
        load_path: str,
        load_weights_only: bool = False,
        strict_model_weights: bool = True,
        ignore_keys: list[str] | None = None,
        event: str | Event = Event.BEFORE_LOAD,
    ) -> None:
        if not isinstance(event, Event):
            names = [e.name.lower() for e in Event]
            if str(event).lower() not in names:
                raise ConfigError(
                    f"{KEY}.event={event!r} is not a Composer event"
                    f"{did_you_mean(str(event).lower(), names)}"
                )
            event = Event[str(event).upper()]
        super().__init__(
            load_path=load_path,
            load_weights_only=load_weights_only,
            strict_model_weights=strict_model_weights,
            ignore_keys=ignore_keys,
            event=event,
        )

    def _load(self, state: State, logger: Logger) -> None:
        if not is_remote(self.load_path) and not Path(self.load_path).exists():
            raise MissingFileError(
                f"{KEY}.load_path '{self.load_path}' does not exist; give the checkpoint file "
                "(or sharded checkpoint folder) a run saved"
            )
        strict = self.strict_model_weights and not self.ignore_keys
        check_load_path(self.load_path, state.model, f"{KEY}.load_path", strict=strict)
        super()._load(state, logger)
