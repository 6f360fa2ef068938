"""``dataset_swap``: resume a run's checkpoint on a different dataset, from that dataset's start.

Config (an entry of the ``callbacks:`` section; the run config is passed in by the trainer)::

    load_path: /checkpoints/run/ep0-ba1000-rank0.pt   # trained with dataset_index: 0
    train_loader: {name: text, dataset: {local: /data/code, ...}}   # the next dataset
    callbacks:
      dataset_swap:
        dataset_index: 1          # one more than the checkpoint's

The callback's checkpoint state records ``dataset_index`` and the ``train_loader`` section of
every dataset trained so far. When a run loads a checkpoint whose recorded index is smaller than
``dataset_index`` (a checkpoint without this callback's state counts as index 0), the data
position the checkpoint stored belongs to the old dataset: it is discarded, the new dataset is
read from its beginning, and training continues in the next epoch (the model, optimizer and
schedule carry on). Resuming with the same index (e.g. autoresume) continues where the
checkpoint stopped, as usual. The train dataset must be a StreamingDataset (``text`` and
streaming ``finetuning`` loaders), whose position is part of a checkpoint.

For a planned sequence of datasets within one run, see ``curriculum_learning``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger
from streaming import StreamingDataset

from llmfoundry.interfaces.callback_with_config import train_loader_section
from llmfoundry.utils.config_checks import NonNegativeInt, check_arguments
from llmfoundry.utils.exceptions import ConfigError

__all__ = ["DatasetSwap"]

log = logging.getLogger(__name__)

KEY = "callbacks.dataset_swap"


class DatasetSwap(Callback):
    """Start the new dataset from its beginning when resuming with a larger ``dataset_index``.

    Args:
        train_config: the whole run config (filled in by the trainer); needs ``train_loader``.
        dataset_index: the index of the dataset this run trains on (0 for the first).

    Raises:
        ConfigError: on a negative index or a run config without ``train_loader``; (at load
            time) if the train dataset is not a StreamingDataset.
    """

    def __init__(self, train_config: Mapping[str, Any], dataset_index: NonNegativeInt) -> None:
        check_arguments(DatasetSwap, f"{KEY}.", dataset_index=dataset_index)
        self.dataset_index = dataset_index
        self.loader_config = train_loader_section(train_config, KEY)
        self.saved_dataset_index = 0  # from the loaded checkpoint
        self.all_dataset_configs: list[dict[str, Any]] = []
        self._checkpoint_loaded = False
        self._fresh_position: dict[str, Any] | None = None

    def before_load(self, state: State, logger: Logger) -> None:
        del logger
        # The new dataset's own starting position, before a checkpoint overwrites it.
        self._fresh_position = _streaming_dataset(state).state_dict(
            num_samples=0, from_beginning=False
        )

    def after_load(self, state: State, logger: Logger) -> None:
        del logger
        resumed = self._checkpoint_loaded or int(state.timestamp.batch) > 0
        if resumed and self.saved_dataset_index < self.dataset_index:
            position = dict(self._fresh_position or {})
            # Before its first iteration a StreamingDataset reports epoch -1.
            position["epoch"] = max(int(position.get("epoch", 0)), 0)
            _streaming_dataset(state).load_state_dict(position)
            state.timestamp = state.timestamp.to_next_epoch()
            self.all_dataset_configs.append(copy.deepcopy(self.loader_config))
            log.info(
                "dataset_swap: dataset %d -> %d; reading the new dataset from its start in epoch %d",
                self.saved_dataset_index,
                self.dataset_index,
                int(state.timestamp.epoch),
            )
        elif not self.all_dataset_configs:
            self.all_dataset_configs.append(copy.deepcopy(self.loader_config))

    def state_dict(self) -> dict[str, Any]:
        return {
            "dataset_index": self.dataset_index,
            "all_dataset_configs": copy.deepcopy(self.all_dataset_configs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._checkpoint_loaded = True
        self.saved_dataset_index = int(state.get("dataset_index", 0))
        self.all_dataset_configs = copy.deepcopy(list(state.get("all_dataset_configs", [])))


def _streaming_dataset(state: State) -> StreamingDataset:
    dataset = getattr(state.train_dataloader, "dataset", None)
    if not isinstance(dataset, StreamingDataset):
        raise ConfigError(
            f"{KEY} needs a train dataset that records its position (a StreamingDataset, as the "
            f"text loader builds); got {type(dataset).__name__}"
        )
    return dataset
