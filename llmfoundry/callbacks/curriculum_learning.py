"""Train on a sequence of data mixes ("phases"), each for a set number of tokens or epochs.

Config (an entry of the ``callbacks:`` section; the run config is passed in by the trainer)::

    max_duration: 3000tok
    train_loader: {name: text, dataset: {local: /data/web, max_seq_len: 2048, ...}, ...}
    callbacks:
      curriculum_learning:
        duration: 1000tok          # phase 0: the top-level train_loader
        schedule:
          - duration: 1500tok      # phase 1: train_loader with these dataset keys replaced
            dataset: {local: /data/code}
          - duration: 500tok       # phase 2: loader-level keys may be replaced too (our extension)
            train_loader: {num_workers: 2}
            dataset: {local: /data/math}

Each phase is one Composer *iteration*: the callback sets the iteration's length and, when the
next iteration starts, builds that phase's loader with
:func:`llmfoundry.utils.builders.build_dataloader_from_section` and makes it the train loader. Composer only
measures iterations in tokens or epochs, so every duration uses ``tok`` or ``ep`` (the same unit
as ``max_duration``), and the durations add up to ``max_duration``.

Checkpoints record the phase index, every phase's duration and loader section, and the data
position within the current phase, so a resumed run continues the right phase where it stopped.
Phases already trained (and the current phase's data) must not change between resumptions.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from composer.core import Callback, State, Time, TimeUnit
from composer.loggers import Logger

from llmfoundry import registry
from llmfoundry.interfaces.callback_with_config import plain, train_loader_section
from llmfoundry.utils.builders import build_dataloader_from_section, build_tokenizer_from_section
from llmfoundry.utils.config_components import check_call_keys
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.registry_utils import check_keys

log = logging.getLogger(__name__)

KEY_PATH = "callbacks.curriculum_learning"
_ENTRY_KEYS = ("dataset", "duration", "train_loader")
# Keys the dataloader builder fills in itself; a phase may not set them.
_BUILDER_FILLED = {"tokenizer", "device_batch_size", "section"}


@runtime_checkable
class _ResumableDataset(Protocol):
    """A dataset that can resume mid-epoch from its saved state (e.g. ``StreamingDataset``)."""

    def load_state_dict(self, obj: dict[str, Any]) -> None: ...


@dataclass
class Phase:
    """One data mix: how long it runs and the complete loader section that builds its data."""

    duration: Time[int]
    train_loader: dict[str, Any]
    key_path: str

    def as_plain(self) -> dict[str, Any]:
        """The phase as checkpoint-safe plain data."""
        return {"duration": str(self.duration), "train_loader": self.train_loader}


class CurriculumLearning(Callback):
    """Switch the train loader from phase to phase as the run's token or epoch count advances.

    Args:
        train_config: the whole (resolved) run config. Needs ``train_loader`` and, unless the
            model carries its tokenizer, ``tokenizer``. ``device_train_batch_size``, if present,
            sets the phases' batch size; otherwise the current train loader's batch size is used.
        schedule: the phases after the first, each ``{duration, dataset?, train_loader?}``:
            ``dataset`` keys replace the top-level ``train_loader.dataset`` keys and
            ``train_loader`` keys replace the top-level loader's keys (one of them is required).
        duration: the length of the first phase, trained on the top-level ``train_loader``.

    Raises:
        ConfigError: on an empty or malformed schedule, a duration that is not a positive
            ``tok``/``ep`` time, mixed units, or a loader key the loader does not take;
            the message names the key path (``callbacks.curriculum_learning.schedule[1].duration``).
    """

    def __init__(
        self,
        train_config: Mapping[str, Any],
        schedule: Sequence[Mapping[str, Any]],
        duration: str | int,
    ) -> None:
        config = plain(train_config)
        loader = train_loader_section(config, KEY_PATH)
        self._train_config: dict[str, Any] = config
        self.phases = build_phases(loader, plain(schedule), plain(duration))
        self._index = 0  # the phase being trained
        self._active: int | None = 0  # the phase whose loader is the train loader (None: unknown)
        self._resume_dataset_state: dict[str, Any] | None = None
        self._state: State | None = None

    @property
    def phase_index(self) -> int:
        """The phase being trained (0 is the top-level ``train_loader``)."""
        return self._index

    # --- Composer events -------------------------------------------------------------------

    def init(self, state: State, logger: Logger) -> None:
        del logger
        self._state = state
        self._check_against_max_duration(state)

    def after_load(self, state: State, logger: Logger) -> None:
        # Composer runs this at the end of Trainer.__init__ whether or not a checkpoint was loaded.
        del logger
        self._check_against_max_duration(state)
        current = self.phases[min(self._index, len(self.phases) - 1)]
        if self._index < len(self.phases) and _done_with(state, current.duration):
            # Saved at the last batch of a phase, before Composer closed the iteration.
            self._index += 1
            state.timestamp = state.timestamp.to_next_iteration()
            self._resume_dataset_state = None
        if self._index >= len(self.phases):
            return
        if self._index != self._active:
            self._switch(state, self._index, self._resume_dataset_state)
        self._resume_dataset_state = None
        state._iteration_length = self.phases[self._index].duration

    def fit_start(self, state: State, logger: Logger) -> None:
        del logger
        self._check_against_max_duration(state)

    def iteration_start(self, state: State, logger: Logger) -> None:
        del logger
        if self._index >= len(self.phases):
            return
        if self._index != self._active:
            self._switch(state, self._index, None)
        state._iteration_length = self.phases[self._index].duration

    def iteration_end(self, state: State, logger: Logger) -> None:
        del state, logger
        self._index += 1

    # --- checkpointing ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        dataset_state = None
        if self._index > 0 and self._state is not None:
            # Composer saves the train dataset's position too, but on resume it restores it into
            # the first phase's loader; keep a copy for the phase loader we rebuild.
            dataset_state = self._state._dataset_state_dict().get("train")
        return {
            "schedule_index": self._index,
            "phases": [phase.as_plain() for phase in self.phases],
            "train_dataset_state": dataset_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        index = int(state["schedule_index"])
        saved = list(state["phases"])
        for i in range(min(index + 1, len(saved))):
            now = self.phases[i].as_plain() if i < len(self.phases) else None
            was = saved[i]
            same = now is not None and (
                now == was if i < index else now["train_loader"] == was["train_loader"]
            )
            if not same:
                what = "phases already trained" if i < index else "the current phase's data"
                raise ConfigError(
                    f"{KEY_PATH}: phase {i} differs from the checkpoint's ({was}); "
                    f"{what} must stay as they were when resuming"
                )
        self._index = index
        self._active = 0 if index == 0 else None
        self._resume_dataset_state = state.get("train_dataset_state")

    # --- helpers ---------------------------------------------------------------------------

    def _check_against_max_duration(self, state: State) -> None:
        max_duration = state.max_duration
        if max_duration is None:
            return
        unit = self.phases[0].duration.unit
        if max_duration.unit != unit:
            raise ConfigError(
                f"{KEY_PATH}: the phase durations are in {unit.value} but max_duration={max_duration} "
                "is not; use the same unit"
            )
        total = sum(phase.duration.value for phase in self.phases)
        if total != max_duration.value:
            raise ConfigError(
                f"{KEY_PATH}: the phase durations add up to {total}{unit.value} but max_duration is "
                f"{max_duration}; they must be equal"
            )

    def _switch(self, state: State, index: int, dataset_state: dict[str, Any] | None) -> None:
        """Build phase ``index``'s loader and make it the train loader."""
        phase = self.phases[index]
        log.info(
            "curriculum_learning: starting phase %d (%s) for %s",
            index,
            phase.key_path,
            phase.duration,
        )
        data_spec = build_dataloader_from_section(
            phase.key_path, phase.train_loader, self._tokenizer(state), self._batch_size(state)
        )
        _stop_streaming_threads(state.train_dataloader)
        loader = data_spec.dataloader
        if dataset_state is not None:
            dataset = getattr(loader, "dataset", None)
            if isinstance(dataset, _ResumableDataset):
                dataset.load_state_dict(dataset_state)
                state.dataset_resumption["train"] = True
        state.set_dataloader(loader, "train")
        state.train_dataloader = loader
        self._active = index

    def _tokenizer(self, state: State) -> Any:
        tokenizer = getattr(state.model, "tokenizer", None)
        if tokenizer is not None:
            return tokenizer
        section = self._train_config.get("tokenizer")
        if not isinstance(section, dict):
            raise ConfigError(
                f"{KEY_PATH} needs a tokenizer: the model has none and the run config has no tokenizer section"
            )
        return build_tokenizer_from_section(section)

    def _batch_size(self, state: State) -> int:
        configured = self._train_config.get("device_train_batch_size")
        if configured is not None:
            return int(configured)
        batch_size = getattr(state.train_dataloader, "batch_size", None)
        if batch_size is None:
            raise ConfigError(
                f"{KEY_PATH} needs device_train_batch_size in the run config "
                "(the current train loader does not tell its batch size)"
            )
        return int(batch_size)


def build_phases(train_loader: dict[str, Any], schedule: Any, first_duration: Any) -> list[Phase]:
    """Validate the schedule and turn it into complete phases (the first is ``train_loader``).

    Raises:
        ConfigError: naming the offending key path.
    """
    if not isinstance(schedule, list) or not schedule:
        raise ConfigError(
            f"{KEY_PATH}.schedule must be a non-empty list of {{duration, dataset}} entries"
        )
    phases = [
        Phase(_parse_duration(first_duration, f"{KEY_PATH}.duration"), train_loader, "train_loader")
    ]
    for i, entry in enumerate(schedule):
        path = f"{KEY_PATH}.schedule[{i}]"
        phases.append(_build_phase(train_loader, entry, path))
    first_unit = phases[0].duration.unit
    for i, phase in enumerate(phases[1:]):
        if phase.duration.unit != first_unit:
            raise ConfigError(
                f"{KEY_PATH}.schedule[{i}].duration={phase.duration} is in {phase.duration.unit.value} "
                f"but {KEY_PATH}.duration is in {first_unit.value}; use one unit for every phase"
            )
    return phases


def _build_phase(train_loader: dict[str, Any], entry: Any, path: str) -> Phase:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path} must be a mapping with duration and dataset")
    check_keys(entry, _ENTRY_KEYS, path)
    if "duration" not in entry:
        raise ConfigError(f"{path}.duration is missing; give the phase's length, e.g. '1000tok'")
    if "dataset" not in entry and "train_loader" not in entry:
        raise ConfigError(f"{path} needs dataset (or train_loader) keys that set the phase's data")
    section = copy.deepcopy(train_loader)
    overrides = entry.get("train_loader") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}.train_loader must be a mapping of loader keys")
    section.update(copy.deepcopy(overrides))
    dataset = entry.get("dataset")
    if dataset is not None:
        if not isinstance(dataset, dict):
            raise ConfigError(f"{path}.dataset must be a mapping of dataset keys")
        section["dataset"] = {**(section.get("dataset") or {}), **copy.deepcopy(dataset)}
    _check_loader_keys(section, f"{path}.train_loader")
    return Phase(
        _parse_duration(entry["duration"], f"{path}.duration"), section, f"{path}.train_loader"
    )


def _check_loader_keys(section: dict[str, Any], path: str) -> None:
    """Fail now, not mid-run, on a loader key the phase's loader builder does not take."""
    if "name" not in section:
        raise ConfigError(
            f"{path}.name is missing; it names an entry of the 'dataloaders' registry"
        )
    builder = registry.dataloaders.get(str(section["name"]))
    kwargs = {k: v for k, v in section.items() if k != "name"}
    check_call_keys(builder, kwargs, path, reserved=_BUILDER_FILLED)


def _parse_duration(value: Any, path: str) -> Time[int]:
    try:
        duration = Time.from_input(value, TimeUnit.EPOCH)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}={value!r} is not a duration such as '1000tok' or '1ep'") from err
    if duration.unit not in (TimeUnit.TOKEN, TimeUnit.EPOCH):
        raise ConfigError(
            f"{path}={value!r}: phases are measured in tokens or epochs ('tok' or 'ep'), "
            "the units Composer's iterations support"
        )
    if duration.value <= 0:
        raise ConfigError(f"{path}={value!r} must be positive")
    return duration


def _stop_streaming_threads(loader: Any) -> None:
    """Stop the download threads of an outgoing loader's StreamingDataset.

    The trainer abandons the old loader's iterator mid-epoch; Streaming's threads would keep
    polling for it (taking CPU from training) until the process ends. They watch this event.
    """
    event = getattr(getattr(loader, "dataset", None), "_event", None)
    if event is not None:
        event.set()


def _done_with(state: State, duration: Time[int]) -> bool:
    """Whether the timestamp's position in the current iteration has reached ``duration``."""
    timestamp = state.timestamp
    if duration.unit == TimeUnit.TOKEN:
        return timestamp.token_in_iteration.value >= duration.value
    return timestamp.epoch_in_iteration.value >= duration.value
