"""The ``eval_gauntlet`` config: its dataclasses, and reading and validating the section (from a
run config or a YAML file). The scoring and the callback are in ``eval_gauntlet_callback``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Required, TypedDict

from omegaconf import DictConfig, ListConfig, OmegaConf

from llmfoundry.utils.config_checks import NonNegativeInt, check_value
from llmfoundry.utils.exceptions import ConfigError, MissingFileError, did_you_mean

KEY = "eval_gauntlet"
DEFAULT_AVERAGE = "default_average"


class Weighting(enum.Enum):
    """How a benchmark's score counts towards its category's score."""

    EQUAL = "EQUAL"
    SAMPLE_SZ = "SAMPLE_SZ"
    LOG_SAMPLE_SZ = "LOG_SAMPLE_SZ"


@dataclass(frozen=True)
class GauntletBenchmark:
    """One benchmark of a category: the evaluator ``{name}/{num_fewshot}-shot``."""

    name: str
    num_fewshot: int
    random_baseline: float = 0.0

    @property
    def label(self) -> str:
        """The evaluator label this benchmark scores (``piqa/0-shot``)."""
        return f"{self.name}/{self.num_fewshot}-shot"


@dataclass(frozen=True)
class GauntletCategory:
    """A named group of benchmarks whose scores are averaged into one."""

    name: str
    benchmarks: tuple[GauntletBenchmark, ...]


@dataclass(frozen=True)
class GauntletConfig:
    """A validated ``eval_gauntlet`` section."""

    categories: tuple[GauntletCategory, ...]
    weighting: Weighting = Weighting.EQUAL
    subtract_random_baseline: bool = True
    rescale_accuracy: bool = True
    averages: dict[str, tuple[str, ...]] = field(default_factory=dict)


# --------------------------------------------------------------------------- config parsing

# The section's keys as a YAML writes them, checked in one pass by ``check_value`` (unknown keys,
# types and required keys, each named by its full path); the rules across keys follow.


class _BenchmarkKeys(TypedDict, total=False):
    name: Required[str]
    num_fewshot: Required[NonNegativeInt]
    random_baseline: float | None  # required while subtract_random_baseline is true


class _CategoryKeys(TypedDict):
    name: str
    benchmarks: list[_BenchmarkKeys]


class _SectionKeys(TypedDict, total=False):
    weighting: str | Weighting
    subtract_random_baseline: bool
    rescale_accuracy: bool
    averages: dict[str, list[str]] | None
    categories: Required[list[_CategoryKeys]]


def plain_container(value: Any) -> Any:
    """OmegaConf containers as plain dicts/lists; anything else unchanged."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _parse_weighting(value: str | Weighting, path: str) -> Weighting:
    if isinstance(value, Weighting):
        return value
    names = [w.value for w in Weighting]
    if value.upper() not in names:
        raise ConfigError(f"{path} must be one of {', '.join(names)}, got {value!r}")
    return Weighting(value.upper())


def _checked_name(section: Mapping[str, Any], path: str) -> str:
    name = section["name"]
    if not name:
        raise ConfigError(f"{path}.name must be a non-empty string, got {name!r}")
    return name


def _parse_benchmark(
    section: Mapping[str, Any], path: str, need_baseline: bool
) -> GauntletBenchmark:
    baseline = section.get("random_baseline")
    if baseline is None:
        if need_baseline:
            raise ConfigError(f"{path}.random_baseline is missing")
        baseline = 0.0
    if not 0.0 <= float(baseline) < 1.0:
        raise ConfigError(f"{path}.random_baseline must be in [0, 1), got {baseline!r}")
    return GauntletBenchmark(
        name=_checked_name(section, path),
        num_fewshot=section["num_fewshot"],
        random_baseline=float(baseline),
    )


def _parse_category(section: Mapping[str, Any], path: str, need_baseline: bool) -> GauntletCategory:
    benchmarks = section["benchmarks"]
    if not benchmarks:
        raise ConfigError(f"{path}.benchmarks is empty; list at least one benchmark")
    return GauntletCategory(
        name=_checked_name(section, path),
        benchmarks=tuple(
            _parse_benchmark(b, f"{path}.benchmarks[{i}]", need_baseline)
            for i, b in enumerate(benchmarks)
        ),
    )


def _parse_averages(raw: Any, categories: Sequence[str], path: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {DEFAULT_AVERAGE: tuple(categories)}
    averages: dict[str, tuple[str, ...]] = {}
    for name, member_list in raw.items():
        if not member_list:
            raise ConfigError(f"{path}.{name} is empty; list the categories it averages")
        for i, member in enumerate(member_list):
            if member not in categories:
                raise ConfigError(
                    f"{path}.{name}[{i}] names unknown category {member!r}"
                    f"{did_you_mean(str(member), categories)} (categories: {', '.join(categories)})"
                )
        if name in categories:
            raise ConfigError(f"{path}.{name} has the same name as a category; rename the average")
        averages[str(name)] = tuple(str(m) for m in member_list)
    return averages


def parse_gauntlet_config(section: Mapping[str, Any], path: str = KEY) -> GauntletConfig:
    """Validate an ``eval_gauntlet`` section into a :class:`GauntletConfig`.

    Args:
        section: the section's contents (``weighting``, ``categories``, ...).
        path: the key path of the section, for messages.

    Returns:
        The typed config; ``averages`` defaults to ``default_average`` over every category.

    Raises:
        ConfigError: on an unknown key (named by its full path, with a suggestion), a missing
            key, a ``random_baseline`` outside [0, 1), an unknown weighting, a duplicate
            category or an average naming an unknown category.
    """
    section = plain_container(section)
    check_value(section, _SectionKeys, path)
    subtract = section.get("subtract_random_baseline", True)
    rescale = section.get("rescale_accuracy", True)
    weighting = _parse_weighting(section.get("weighting", "EQUAL"), f"{path}.weighting")
    raw_categories = section["categories"]
    if not raw_categories:
        raise ConfigError(f"{path}.categories is empty; list at least one category")
    categories = tuple(
        _parse_category(c, f"{path}.categories[{i}]", need_baseline=subtract)
        for i, c in enumerate(raw_categories)
    )
    names = [c.name for c in categories]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{path}.categories[{i}].name {name!r} is used by two categories")
    return GauntletConfig(
        categories=categories,
        weighting=weighting,
        subtract_random_baseline=subtract,
        rescale_accuracy=rescale,
        averages=_parse_averages(section.get("averages"), names, f"{path}.averages"),
    )


def load_gauntlet_config(
    section_or_path: Mapping[str, Any] | str | os.PathLike[str] | GauntletConfig,
) -> GauntletConfig:
    """Read a gauntlet config from a run config's section or from a YAML file.

    Args:
        section_or_path: the ``eval_gauntlet:`` section's contents, a path to a YAML file whose
            top level holds ``eval_gauntlet:`` (relative paths are relative to the working
            directory), or an already built :class:`GauntletConfig`.

    Returns:
        The validated config.

    Raises:
        MissingFileError: the file does not exist.
        ConfigError: the file has no ``eval_gauntlet`` key, or the section is invalid (see
            :func:`parse_gauntlet_config`).
    """
    if isinstance(section_or_path, GauntletConfig):
        return section_or_path
    if isinstance(section_or_path, str | os.PathLike):
        file = Path(section_or_path)
        if not file.is_file():
            raise MissingFileError(
                f"{KEY}: gauntlet file {str(file)!r} does not exist; give a YAML file path "
                "(relative to the working directory) or the section itself"
            )
        loaded = plain_container(OmegaConf.load(file))
        if not isinstance(loaded, Mapping) or KEY not in loaded:
            raise ConfigError(f"{file}: the file has no top-level '{KEY}:' section")
        return parse_gauntlet_config(loaded[KEY], f"{KEY} ({file})")
    return parse_gauntlet_config(section_or_path)
