"""Which split of a Hugging Face dataset each output split of ``convert_dataset_hf`` is read
from: the ``c4`` and ``the_pile`` presets (LLM Foundry's split names and sizes) and the splits
of any other dataset, with ``*_small``/``*_xsmall`` truncated copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmfoundry.utils.exceptions import ConfigError, did_you_mean


@dataclass(frozen=True)
class SplitPlan:
    """Where one output split comes from.

    Attributes:
        folder: the output sub-folder (the split name the user asked for, e.g. ``val_small``).
        hf_split: the dataset's split it is read from (e.g. ``validation``).
        max_samples: write at most this many samples (a truncated copy), or None for all.
        raw_rows: the split's row count when known (presets), for the progress bar's total.
    """

    folder: str
    hf_split: str
    max_samples: int | None = None
    raw_rows: int | None = None


@dataclass(frozen=True)
class DatasetPreset:
    """What LLM Foundry knows about a pretraining dataset on the Hub.

    Attributes:
        hub_name: the name given to ``datasets.load_dataset``.
        default_subset: the subset (config) used when ``--data_subset`` is not given.
        text_column: the column holding the documents.
        chars_per_sample: average characters per row, for estimating the samples written.
        chars_per_token: average characters per token, for the same estimate.
        splits: the output splits it offers, by name.
    """

    hub_name: str
    default_subset: str | None
    text_column: str
    chars_per_sample: int
    chars_per_token: int
    splits: Mapping[str, SplitPlan]


# Truncated copies: the parent split and the number of samples they keep (LLM Foundry's).
SMALL_SPLITS: dict[str, tuple[str, int]] = {
    "train_small": ("train", 100_000),
    "val_small": ("val", 10_000),
    "val_xsmall": ("val", 3_000),
}
PRESET_SPLIT_NAMES = ("train", "train_small", "val", "val_small", "val_xsmall")
DEFAULT_SPLITS = ("train",)


def preset_splits(train_rows: int, val_rows: int) -> dict[str, SplitPlan]:
    """The five splits of a preset whose Hub splits are ``train`` and ``validation``."""
    full = {
        "train": SplitPlan("train", "train", None, train_rows),
        "val": SplitPlan("val", "validation", None, val_rows),
    }
    small = {
        name: SplitPlan(name, full[parent].hf_split, count, count)
        for name, (parent, count) in SMALL_SPLITS.items()
    }
    return {**full, **small}


C4 = DatasetPreset(
    hub_name="allenai/c4",
    default_subset="en",
    text_column="text",
    chars_per_sample=2163,
    chars_per_token=4,
    splits=preset_splits(train_rows=364_868_892, val_rows=364_608),
)
THE_PILE = DatasetPreset(
    hub_name="the_pile",
    default_subset="all",
    text_column="text",
    chars_per_sample=6212,
    chars_per_token=4,
    splits=preset_splits(train_rows=210_000_000, val_rows=214_670),
)
PRESETS: dict[str, DatasetPreset] = {"allenai/c4": C4, "c4": C4, "the_pile": THE_PILE}


def no_split_error(dataset: str, name: str, available: Iterable[str]) -> ConfigError:
    """``--splits`` names a split that ``dataset`` does not have: the error lists those it has."""
    names = list(available)
    return ConfigError(
        f"--splits: dataset '{dataset}' has no split '{name}'{did_you_mean(name, names)}; "
        f"available: {', '.join(names)}"
    )


def preset_split(preset: DatasetPreset, dataset: str, name: str) -> SplitPlan:
    """The plan of a preset's split.

    Raises:
        ConfigError: if the preset has no such split (lists the ones it has).
    """
    if name not in preset.splits:
        raise no_split_error(dataset, name, preset.splits)
    return preset.splits[name]


def dataset_split(loaded: Mapping[str, Any], dataset: str, name: str) -> SplitPlan:
    """The plan of an output split of a non-preset dataset.

    A split the dataset has is read whole; ``val`` may be read from ``validation``, as the
    presets do. ``train_small``, ``val_small`` and ``val_xsmall`` are truncated copies of
    ``train``/``val`` (as in the presets) when the dataset has no split of that name itself.

    Raises:
        ConfigError: if the split cannot be made (lists the dataset's splits).
    """
    if name in loaded:
        return SplitPlan(name, name)
    if name == "val" and "validation" in loaded:
        return SplitPlan(name, "validation")
    if name in SMALL_SPLITS:
        parent, count = SMALL_SPLITS[name]
        for candidate in (parent, "validation") if parent == "val" else (parent,):
            if candidate in loaded:
                return SplitPlan(name, candidate, count)
    raise no_split_error(dataset, name, loaded)


def plan_split(
    preset: DatasetPreset | None, loaded: Mapping[str, Any], dataset: str, name: str
) -> SplitPlan:
    """Where output split ``name`` comes from, checked against the splits that were loaded.

    Raises:
        ConfigError: if the split does not exist (lists the available ones).
    """
    if preset is None:
        return dataset_split(loaded, dataset, name)
    plan = preset_split(preset, dataset, name)
    if plan.hf_split not in loaded:  # e.g. a partial mirror of the preset's dataset
        raise ConfigError(
            f"dataset '{dataset}' has no split '{plan.hf_split}' (needed for --splits {name}); "
            f"available: {', '.join(loaded)}"
        )
    return plan


def estimated_samples(
    preset: DatasetPreset | None, plan: SplitPlan, concat_tokens: int | None
) -> int | None:
    """How many samples a split will probably yield, for the progress bar (None if unknown)."""
    if plan.max_samples is not None:
        return plan.max_samples
    if preset is None or plan.raw_rows is None:
        return None
    if concat_tokens is None:
        return plan.raw_rows
    return plan.raw_rows * preset.chars_per_sample // (preset.chars_per_token * concat_tokens)
