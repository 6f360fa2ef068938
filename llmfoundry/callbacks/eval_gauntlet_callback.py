"""``eval_gauntlet``: composite scores over in-context-learning benchmarks.

A gauntlet groups ICL benchmarks into categories and reports one score per category and per
average of categories, so a run is summarised by a handful of numbers instead of dozens of
accuracies. The config (the ``eval_gauntlet:`` section of a run YAML, or a YAML file holding
one) looks like::

    eval_gauntlet:
      weighting: EQUAL              # EQUAL | SAMPLE_SZ | LOG_SAMPLE_SZ
      subtract_random_baseline: true
      rescale_accuracy: true
      averages:                     # optional; default: default_average over every category
        core_average: [world_knowledge, commonsense_reasoning]
      categories:
      - name: world_knowledge
        benchmarks:
        - {name: jeopardy, num_fewshot: 3, random_baseline: 0}

How the numbers are made:

* a benchmark's raw score is the mean of the metrics whose name contains ``Accuracy`` of the
  evaluator labelled ``{name}/{num_fewshot}-shot``. A task split into categories (evaluators
  ``{name}/{category}/{k}-shot`` or ``{name}/{k}-shot/{category}``) scores the plain mean over
  all its categories' accuracy metrics;
* with ``subtract_random_baseline`` the score is ``raw - random_baseline``, and with
  ``rescale_accuracy`` as well it is then divided by ``1 - random_baseline`` (so chance is 0
  and a perfect score 1);
* a category's score is the weighted mean of its benchmarks' scores, the weight being 1
  (``EQUAL``), the benchmark's number of samples (``SAMPLE_SZ``) or
  ``max(log2(samples), 1)`` (``LOG_SAMPLE_SZ``). Sample counts come from ``benchmark_sizes``
  when given, else from ``len()`` of the evaluator's dataset (else the samples it evaluated);
* an average is the plain mean of its categories' scores.

As in LLM Foundry, a benchmark that did not run (or has no accuracy metric) leaves its whole
category unscored (one warning names the benchmarks, one each category), and an average none of
whose categories scored is 0. A round in which no benchmark of the gauntlet ran logs nothing.

The callback computes the scores once per evaluation round: at ``Event.EVAL_AFTER_ALL`` during
``fit`` and at ``Event.EVAL_STANDALONE_END`` after ``Trainer.eval()``. It logs
``icl/metrics/eval_gauntlet/{category}`` and ``icl/metrics/eval_gauntlet/{average}`` and keeps
them in :attr:`EvalGauntlet.last_scores` (``gauntlet_table`` renders them as markdown). Do not
also call its hooks by hand after ``Trainer.eval()``: that would log the round twice.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence, Sized
from dataclasses import asdict, dataclass
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger

from llmfoundry.callbacks.eval_gauntlet_config import (
    DEFAULT_AVERAGE,
    KEY,
    GauntletBenchmark,
    GauntletCategory,
    GauntletConfig,
    Weighting,
    load_gauntlet_config,
    parse_gauntlet_config,
    plain_container,
)
from llmfoundry.utils.exceptions import ConfigError

log = logging.getLogger(__name__)

LOG_PREFIX = "icl/metrics/eval_gauntlet"

# The config classes and readers live in ``eval_gauntlet_config``; they stay importable from here.
__all__ = [
    "DEFAULT_AVERAGE",
    "KEY",
    "LOG_PREFIX",
    "EvalGauntlet",
    "GauntletBenchmark",
    "GauntletCategory",
    "GauntletConfig",
    "GauntletScores",
    "Weighting",
    "adjusted_score",
    "benchmark_weight",
    "gauntlet_table",
    "load_gauntlet_config",
    "parse_gauntlet_config",
    "score_gauntlet",
]


# --------------------------------------------------------------------------- scoring


def benchmark_weight(weighting: Weighting, n_samples: int | None, label: str) -> float:
    """The weight of a benchmark with ``n_samples`` samples under ``weighting``.

    Raises:
        ConfigError: a size-based weighting but the benchmark's size is unknown.
    """
    if weighting is Weighting.EQUAL:
        return 1.0
    if not n_samples:
        raise ConfigError(
            f"{KEY}.weighting {weighting.value} needs the number of samples of {label}, which "
            "is unknown; pass benchmark_sizes or use weighting: EQUAL"
        )
    if weighting is Weighting.SAMPLE_SZ:
        return float(n_samples)
    return max(math.log2(n_samples), 1.0)


def adjusted_score(config: GauntletConfig, raw: float, random_baseline: float) -> float:
    """A benchmark's raw accuracy after the config's baseline subtraction and rescaling."""
    if not config.subtract_random_baseline:
        return raw
    score = raw - random_baseline
    if config.rescale_accuracy:
        score /= 1.0 - random_baseline
    return score


@dataclass(frozen=True)
class GauntletScores:
    """One round's results: per benchmark (adjusted), per category and per average."""

    benchmarks: dict[str, float]
    categories: dict[str, float]
    averages: dict[str, float]
    missing: tuple[str, ...]

    def composite(self) -> dict[str, float]:
        """Category scores followed by averages, the numbers the callback logs."""
        return {**self.categories, **self.averages}


def score_gauntlet(
    config: GauntletConfig, accuracies: Mapping[str, float], sizes: Mapping[str, int]
) -> GauntletScores:
    """Combine benchmark accuracies into category and average scores.

    Args:
        config: the gauntlet.
        accuracies: raw accuracy per benchmark label (``piqa/0-shot``); absent = did not run.
        sizes: number of samples per benchmark label (needed for size-based weightings).

    Returns:
        The scores; ``missing`` lists the benchmark labels absent from ``accuracies``. Nothing
        is scored when ``accuracies`` is empty.
    """
    benchmark_scores: dict[str, float] = {}
    category_scores: dict[str, float] = {}
    missing: list[str] = []
    for category in config.categories:
        ran = [bench for bench in category.benchmarks if bench.label in accuracies]
        missing += [bench.label for bench in category.benchmarks if bench.label not in accuracies]
        scores = {
            bench.label: adjusted_score(config, accuracies[bench.label], bench.random_baseline)
            for bench in ran
        }
        benchmark_scores.update(scores)
        if not ran or len(ran) < len(category.benchmarks):
            continue  # as in LLM Foundry, a category is scored only when all of it ran
        weights = {
            label: benchmark_weight(config.weighting, sizes.get(label), label) for label in scores
        }
        total = sum(weights[label] * score for label, score in scores.items())
        category_scores[category.name] = total / sum(weights.values())
    averages: dict[str, float] = {}
    for name, members in config.averages.items():
        present = [category_scores[m] for m in members if m in category_scores]
        if accuracies:  # LLM Foundry logs 0 for an average none of whose categories scored
            averages[name] = sum(present) / len(present) if present else 0.0
    return GauntletScores(benchmark_scores, category_scores, averages, tuple(missing))


def gauntlet_table(scores: Mapping[str, float] | GauntletScores) -> str:
    """A markdown table of scores (``| name | score |``), in the order given.

    Args:
        scores: name → score (e.g. :attr:`EvalGauntlet.last_scores`), or a
            :class:`GauntletScores` (categories, then averages).

    Returns:
        The table, without a trailing newline.
    """
    if isinstance(scores, GauntletScores):
        scores = scores.composite()
    values = {name: f"{value:.4f}" for name, value in scores.items()}
    name_width = max([len("name"), *(len(name) for name in values)])
    score_width = max([len("score"), *(len(text) for text in values.values())])
    lines = [
        f"| {'name':<{name_width}} | {'score':>{score_width}} |",
        f"| {'-' * name_width} | {'-' * (score_width - 1)}: |",
    ]
    lines += [f"| {n:<{name_width}} | {t:>{score_width}} |" for n, t in values.items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------- callback


def _accuracy_metrics(metrics: Mapping[str, Any]) -> list[Any]:
    return [metric for name, metric in metrics.items() if "Accuracy" in name]


def _matches(label: str, bench: GauntletBenchmark) -> bool:
    """Whether evaluator ``label`` is ``bench`` itself or one of its categories."""
    if label == bench.label:
        return True
    parts = label.split("/")
    shot = f"{bench.num_fewshot}-shot"
    return len(parts) == 3 and parts[0] == bench.name and shot in (parts[1], parts[2])


def _dataset_size(state: State) -> int | None:
    dataset = getattr(state.dataloader, "dataset", None)
    if not isinstance(dataset, Sized):
        return None
    try:
        return len(dataset)
    except TypeError:  # e.g. an IterableDataset whose __len__ refuses
        return None


class EvalGauntlet(Callback):
    """Log composite scores over ICL benchmarks after each evaluation round.

    Args:
        categories: the ``categories`` list of the config (see the module docstring).
        weighting: ``EQUAL``, ``SAMPLE_SZ`` or ``LOG_SAMPLE_SZ``.
        subtract_random_baseline: subtract each benchmark's ``random_baseline``.
        rescale_accuracy: with ``subtract_random_baseline``, divide by ``1 - random_baseline``.
        averages: average name → the categories it averages (default: ``default_average``
            over every category).
        benchmark_sizes: samples per benchmark label (``piqa/0-shot``), overriding the sizes
            read from the evaluators' datasets.

    Raises:
        ConfigError: the config is invalid (see :func:`parse_gauntlet_config`).
    """

    def __init__(
        self,
        categories: Sequence[Mapping[str, Any]],
        weighting: str = "EQUAL",
        subtract_random_baseline: bool = True,
        rescale_accuracy: bool = True,
        averages: Mapping[str, Sequence[str]] | None = None,
        benchmark_sizes: Mapping[str, int] | None = None,
    ) -> None:
        section: dict[str, Any] = {
            "categories": categories,
            "weighting": weighting,
            "subtract_random_baseline": subtract_random_baseline,
            "rescale_accuracy": rescale_accuracy,
        }
        if averages is not None:
            section["averages"] = averages
        self.config = parse_gauntlet_config(section)
        self.benchmark_sizes = dict(plain_container(benchmark_sizes) or {})
        self.last_scores: dict[str, float] = {}
        self.last_result: GauntletScores | None = None
        self._sizes_seen: dict[str, int] = {}
        self._ran: set[str] = set()
        self._warned: set[str] = set()

    @classmethod
    def from_config(
        cls,
        config: GauntletConfig | Mapping[str, Any] | str | os.PathLike[str],
        benchmark_sizes: Mapping[str, int] | None = None,
    ) -> EvalGauntlet:
        """Build the callback from a section, a YAML file path or a :class:`GauntletConfig`.

        Raises:
            MissingFileError, ConfigError: see :func:`load_gauntlet_config`.
        """
        parsed = load_gauntlet_config(config)
        return cls(
            categories=[
                {"name": c.name, "benchmarks": [asdict(b) for b in c.benchmarks]}
                for c in parsed.categories
            ],
            weighting=parsed.weighting.value,
            subtract_random_baseline=parsed.subtract_random_baseline,
            rescale_accuracy=parsed.rescale_accuracy,
            averages={name: list(members) for name, members in parsed.averages.items()},
            benchmark_sizes=benchmark_sizes,
        )

    # -- events

    def eval_before_all(self, state: State, logger: Logger) -> None:
        """Start a round during ``fit``."""
        del state, logger
        self._ran.clear()

    def eval_standalone_start(self, state: State, logger: Logger) -> None:
        """Start a round of ``Trainer.eval()``."""
        del state, logger
        self._ran.clear()

    def eval_end(self, state: State, logger: Logger) -> None:
        """Note which evaluator ran and how many samples its dataset holds."""
        del logger
        label = state.dataloader_label
        if label is None:
            return
        self._ran.add(label)
        size = _dataset_size(state) or int(state.eval_timestamp.sample)
        if size:
            self._sizes_seen[label] = size

    def eval_after_all(self, state: State, logger: Logger) -> None:
        """Score and log the round that just ended during ``fit``."""
        self.score_and_log(state, logger)

    def eval_standalone_end(self, state: State, logger: Logger) -> None:
        """Score and log the round that ``Trainer.eval()`` just ran."""
        self.score_and_log(state, logger)

    # -- scoring

    def score_and_log(self, state: State, logger: Logger) -> dict[str, float]:
        """Score the evaluators of this round, log the composite scores and keep them.

        Returns:
            Category scores followed by averages (also in :attr:`last_scores`).
        """
        result = self.compute(state, labels=self._ran or None)
        if result.composite():
            logger.log_metrics({f"{LOG_PREFIX}/{k}": v for k, v in result.composite().items()})
        return self.last_scores

    def compute(self, state: State, labels: set[str] | None = None) -> GauntletScores:
        """Score the gauntlet from ``state.eval_metrics``, warning about missing benchmarks.

        Args:
            state: the trainer state after evaluation.
            labels: evaluator labels to use (default: every label in ``state.eval_metrics``).

        Returns:
            The scores, also kept in :attr:`last_result` and :attr:`last_scores`.
        """
        usable = {
            label: metrics
            for label, metrics in state.eval_metrics.items()
            if labels is None or label in labels
        }
        accuracies: dict[str, float] = {}
        sizes: dict[str, int] = {}
        for category in self.config.categories:
            for bench in category.benchmarks:
                parts = [label for label in usable if _matches(label, bench)]
                metrics = [m for label in parts for m in _accuracy_metrics(usable[label])]
                values = [float(m.compute()) for m in metrics]
                if not values:
                    continue
                accuracies[bench.label] = sum(values) / len(values)
                sizes[bench.label] = sum(self._sizes_seen.get(label, 0) for label in parts)
        sizes.update(self.benchmark_sizes)
        result = score_gauntlet(self.config, accuracies, sizes)
        self._warn_missing(result)
        self.last_result = result
        self.last_scores = result.composite()
        return result

    def _warn_missing(self, result: GauntletScores) -> None:
        # Warn once per benchmark/category, not at every evaluation round of a long run.
        new = [label for label in result.missing if f"benchmark:{label}" not in self._warned]
        if new:
            log.warning(
                "eval_gauntlet: no evaluator ran for %s; these benchmarks are skipped",
                ", ".join(new),
            )
            self._warned.update(f"benchmark:{label}" for label in new)
        for category in self.config.categories:
            key = f"category:{category.name}"
            if category.name not in result.categories and key not in self._warned:
                log.warning(
                    "eval_gauntlet: category %r is not scored (not all of its benchmarks ran) "
                    "and is left out of the averages",
                    category.name,
                )
                self._warned.add(key)
