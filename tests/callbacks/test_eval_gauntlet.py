"""The eval gauntlet: composite scores from real Composer evaluation rounds, and its config.

Every evaluator runs over a tensor of 0/1 "correct" flags; the stub model's accuracy metric is
the mean of those flags, so each benchmark's accuracy and size are known exactly and the
category/average scores can be computed by hand.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from composer.core import Evaluator
from composer.loggers import InMemoryLogger
from composer.models import ComposerModel
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MeanMetric, Metric

from llmfoundry.callbacks.eval_gauntlet_callback import (
    EvalGauntlet,
    GauntletBenchmark,
    Weighting,
    gauntlet_table,
    load_gauntlet_config,
    parse_gauntlet_config,
)
from llmfoundry.utils.builders import build_callbacks
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from tests.fixtures import cpu_trainer, fit_closed

PREFIX = "icl/metrics/eval_gauntlet"

# label → (correct samples, samples)
RUN: dict[str, tuple[int, int]] = {
    "jeopardy/3-shot": (3, 10),  # accuracy 0.3
    "arc_easy/3-shot": (28, 40),  # 0.7
    "piqa/0-shot": (12, 16),  # 0.75
    "winograd/0-shot": (5, 8),  # 0.625
}

CATEGORIES: list[dict[str, Any]] = [
    {
        "name": "world_knowledge",
        "benchmarks": [
            {"name": "jeopardy", "num_fewshot": 3, "random_baseline": 0.0},
            {"name": "arc_easy", "num_fewshot": 3, "random_baseline": 0.25},
        ],
    },
    {
        "name": "commonsense_reasoning",
        "benchmarks": [
            {"name": "piqa", "num_fewshot": 0, "random_baseline": 0.5},
            {"name": "winograd", "num_fewshot": 0, "random_baseline": 0.5},
        ],
    },
]
AVERAGES = {
    "core_average": ["world_knowledge", "commonsense_reasoning"],
    "knowledge_only": ["world_knowledge"],
}


class StubAccuracy(MeanMetric):
    """Mean of the 0/1 correct flags."""


class StubLoss(MeanMetric):
    """Mean of 1 - flag: a second metric whose value differs from the accuracy."""


class FlagModel(ComposerModel):
    """Batches are 0/1 "correct" flags, scored by ``StubAccuracy`` and ``StubLoss``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.linear(batch.float().unsqueeze(-1))

    def loss(self, outputs: Any, batch: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        del batch, args, kwargs
        return outputs.pow(2).mean()

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        # The non-accuracy metric comes first: the gauntlet must pick the accuracy one.
        return {"StubLoss": StubLoss(), "StubAccuracy": StubAccuracy()}

    def update_metric(self, batch: Any, outputs: Any, metric: Metric) -> None:
        del outputs
        correct = batch.float()
        metric.update(correct if isinstance(metric, StubAccuracy) else 1.0 - correct)


class Flags(Dataset[torch.Tensor]):
    """``total`` flags of which the first ``correct`` are 1."""

    def __init__(self, correct: int, total: int) -> None:
        self.values = (torch.arange(total) < correct).long()

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.values[index]


def evaluators(run: Mapping[str, tuple[int, int]]) -> list[Evaluator]:
    return [
        Evaluator(
            label=label,
            dataloader=DataLoader(Flags(correct, total), batch_size=4),
            metric_names=["StubLoss", "StubAccuracy"],
        )
        for label, (correct, total) in run.items()
    ]


def run_eval(
    gauntlet: EvalGauntlet, run: Mapping[str, tuple[int, int]] = RUN
) -> tuple[EvalGauntlet, InMemoryLogger]:
    """One ``Trainer.eval()`` round over ``run``'s evaluators, logged in memory."""
    memory, model = InMemoryLogger(), FlagModel()
    trainer = cpu_trainer(
        model,
        eval_dataloader=evaluators(run),
        optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
        callbacks=[gauntlet],
        loggers=[memory],
    )
    trainer.eval()
    trainer.close()
    return gauntlet, memory


def logged(memory: InMemoryLogger, name: str) -> list[float]:
    return [float(value) for _, value in memory.data.get(f"{PREFIX}/{name}", [])]


def gauntlet(**kwargs: Any) -> EvalGauntlet:
    kwargs.setdefault("categories", CATEGORIES)
    kwargs.setdefault("averages", AVERAGES)
    return EvalGauntlet(**kwargs)


# Hand computation. Rescaled scores (acc - baseline) / (1 - baseline):
#   jeopardy 0.3, arc_easy (0.7 - .25) / .75 = 0.6, piqa (.75 - .5) / .5 = 0.5,
#   winograd (.625 - .5) / .5 = 0.25.
LOG2 = math.log2
RESCALED_CASES = {
    # EQUAL: means of the two benchmarks.
    "EQUAL": {"world_knowledge": 0.45, "commonsense_reasoning": 0.375},
    # SAMPLE_SZ: (10 * .3 + 40 * .6) / 50 and (16 * .5 + 8 * .25) / 24.
    "SAMPLE_SZ": {"world_knowledge": 27 / 50, "commonsense_reasoning": 10 / 24},
    # LOG_SAMPLE_SZ: weights log2(n).
    "LOG_SAMPLE_SZ": {
        "world_knowledge": (LOG2(10) * 0.3 + LOG2(40) * 0.6) / (LOG2(10) + LOG2(40)),
        "commonsense_reasoning": (4 * 0.5 + 3 * 0.25) / 7,
    },
}


@pytest.mark.parametrize("weighting", list(RESCALED_CASES))
def test_weightings_match_hand_computation(weighting: str) -> None:
    callback, memory = run_eval(gauntlet(weighting=weighting))
    expected = dict(RESCALED_CASES[weighting])
    expected["core_average"] = (expected["world_knowledge"] + expected["commonsense_reasoning"]) / 2
    expected["knowledge_only"] = expected["world_knowledge"]

    assert callback.last_scores == pytest.approx(expected)
    assert list(callback.last_scores) == [
        "world_knowledge",
        "commonsense_reasoning",
        "core_average",
        "knowledge_only",
    ]
    for name, value in expected.items():
        assert logged(memory, name) == pytest.approx([value]), name  # once per round


def test_without_rescaling_only_subtracts_baseline() -> None:
    # jeopardy .3, arc .45, piqa .25, winograd .125.
    callback, _ = run_eval(gauntlet(rescale_accuracy=False))
    assert callback.last_scores == pytest.approx(
        {
            "world_knowledge": 0.375,
            "commonsense_reasoning": 0.1875,
            "core_average": 0.28125,
            "knowledge_only": 0.375,
        }
    )


@pytest.mark.parametrize("rescale", [True, False])
def test_without_baseline_subtraction_uses_raw_accuracy(rescale: bool) -> None:
    # Rescaling only applies on top of subtraction, so it changes nothing here.
    callback, _ = run_eval(gauntlet(subtract_random_baseline=False, rescale_accuracy=rescale))
    assert callback.last_scores == pytest.approx(
        {
            "world_knowledge": (0.3 + 0.7) / 2,
            "commonsense_reasoning": (0.75 + 0.625) / 2,
            "core_average": (0.5 + 0.6875) / 2,
            "knowledge_only": 0.5,
        }
    )


def test_benchmark_sizes_override_and_log_weight_floor() -> None:
    # jeopardy declared with 1 sample: log2(1) = 0 is floored to weight 1.
    callback, _ = run_eval(
        gauntlet(weighting="LOG_SAMPLE_SZ", benchmark_sizes={"jeopardy/3-shot": 1})
    )
    expected = (1 * 0.3 + LOG2(40) * 0.6) / (1 + LOG2(40))
    assert callback.last_scores["world_knowledge"] == pytest.approx(expected)


def test_default_average_covers_every_category() -> None:
    callback, memory = run_eval(EvalGauntlet(categories=CATEGORIES))
    assert callback.last_scores["default_average"] == pytest.approx((0.45 + 0.375) / 2)
    assert logged(memory, "default_average") == pytest.approx([(0.45 + 0.375) / 2])


def test_a_missing_benchmark_leaves_its_category_unscored(caplog: pytest.LogCaptureFixture) -> None:
    # LLM Foundry's rule: a category is scored only when every one of its benchmarks ran.
    categories = [
        *CATEGORIES[:1],
        {
            "name": "commonsense_reasoning",
            "benchmarks": [
                *CATEGORIES[1]["benchmarks"],
                {"name": "hellaswag", "num_fewshot": 10, "random_baseline": 0.25},
            ],
        },
        {
            "name": "reading_comprehension",
            "benchmarks": [{"name": "squad", "num_fewshot": 3, "random_baseline": 0.0}],
        },
    ]
    averages = {
        "core_average": ["world_knowledge", "commonsense_reasoning"],
        "reading_only": ["reading_comprehension"],
    }
    caplog.set_level(logging.WARNING, logger="llmfoundry.callbacks.eval_gauntlet_callback")
    callback, memory = run_eval(EvalGauntlet(categories=categories, averages=averages))

    benchmark_warnings = [r.getMessage() for r in caplog.records if "no evaluator ran" in r.message]
    assert len(benchmark_warnings) == 1
    assert "hellaswag/10-shot" in benchmark_warnings[0]
    assert "squad/3-shot" in benchmark_warnings[0]
    for name in ("'commonsense_reasoning'", "'reading_comprehension'"):
        assert any(name in r.getMessage() for r in caplog.records), name
    # piqa and winograd ran, but without hellaswag their category is not scored; an average
    # none of whose categories scored is 0, as LLM Foundry logs it.
    assert callback.last_scores == pytest.approx(
        {"world_knowledge": 0.45, "core_average": 0.45, "reading_only": 0.0}
    )
    assert logged(memory, "commonsense_reasoning") == []
    assert logged(memory, "reading_only") == [0.0]


def test_benchmark_score_is_the_mean_of_its_accuracy_metrics() -> None:
    class TwoAccuracies(FlagModel):
        def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
            metrics = super().get_metrics(is_train)
            return {**metrics, "InverseAccuracy": StubLoss()}

    model = TwoAccuracies()
    metric_names = {
        "jeopardy/3-shot": ["StubAccuracy", "InverseAccuracy"],
        "arc_easy/3-shot": ["StubAccuracy"],
        "piqa/0-shot": ["^StubLoss$"],  # Composer reads each name as a regular expression
        "winograd/0-shot": ["^StubLoss$"],
    }
    callback = gauntlet()
    trainer = cpu_trainer(
        model,
        eval_dataloader=[
            Evaluator(
                label=label,
                dataloader=DataLoader(Flags(*RUN[label]), batch_size=4),
                metric_names=names,
            )
            for label, names in metric_names.items()
        ],
        optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
        callbacks=[callback],
    )
    trainer.eval()
    trainer.close()
    # jeopardy: mean of 0.3 and 1 - 0.3; arc_easy (0.7 - 0.25) / 0.75. piqa and winograd have no
    # metric named *Accuracy* (StubLoss only), so commonsense_reasoning is not scored.
    assert callback.last_scores == pytest.approx(
        {"world_knowledge": (0.5 + 0.6) / 2, "core_average": 0.55, "knowledge_only": 0.55}
    )


def test_a_round_without_any_gauntlet_benchmark_logs_nothing() -> None:
    callback, memory = run_eval(gauntlet(), {"lambada/0-shot": (1, 2)})
    assert callback.last_scores == {}
    assert not [key for key in memory.data if key.startswith(PREFIX)]


def test_category_split_task_scores_mean_of_its_categories() -> None:
    run = {
        "arc_easy/physics/3-shot": (2, 4),  # 0.5
        "arc_easy/biology/3-shot": (4, 4),  # 1.0
    }
    categories = [
        {
            "name": "science",
            "benchmarks": [{"name": "arc_easy", "num_fewshot": 3, "random_baseline": 0.25}],
        }
    ]
    callback, _ = run_eval(EvalGauntlet(categories=categories), run)
    # Raw 0.75, rescaled (0.75 - 0.25) / 0.75.
    assert callback.last_scores["science"] == pytest.approx(2 / 3)


def test_logs_once_per_round_during_fit_from_the_evaluators_that_ran() -> None:
    model = FlagModel()
    memory = InMemoryLogger()
    callback = gauntlet()
    round_evaluators = evaluators(RUN)
    # jeopardy runs only in the second round: the first round does not score world_knowledge
    # (rather than from arc_easy alone or from a stale, never-updated jeopardy metric).
    round_evaluators[0].eval_interval = "2ba"
    fit_closed(
        model,
        train_dataloader=DataLoader(Flags(2, 4), batch_size=2),
        eval_dataloader=round_evaluators,
        eval_interval="1ba",
        max_duration="2ba",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
        callbacks=[callback],
        loggers=[memory],
    )
    assert logged(memory, "world_knowledge") == pytest.approx([0.45])
    assert logged(memory, "commonsense_reasoning") == pytest.approx([0.375, 0.375])
    assert logged(memory, "knowledge_only") == pytest.approx([0.0, 0.45])


def test_registered_callback_and_gauntlet_table() -> None:
    (callback,) = build_callbacks(
        {"eval_gauntlet": {"categories": CATEGORIES, "weighting": "SAMPLE_SZ"}}
    )
    assert isinstance(callback, EvalGauntlet)
    assert callback.config.weighting is Weighting.SAMPLE_SZ
    with pytest.raises(ConfigError, match=r"callbacks\.eval_gauntlet\.weigthing .*'weighting'"):
        build_callbacks({"eval_gauntlet": {"categories": CATEGORIES, "weigthing": "EQUAL"}})

    assert gauntlet_table({"world_knowledge": 0.45, "avg": -0.4125}) == (
        "| name            |   score |\n"
        "| --------------- | ------: |\n"
        "| world_knowledge |  0.4500 |\n"
        "| avg             | -0.4125 |"
    )


# --------------------------------------------------------------------------- config


def _section(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "weighting": "EQUAL",
        "subtract_random_baseline": True,
        "rescale_accuracy": True,
        "averages": {"core": ["world_knowledge", "commonsense_reasoning"]},
        "categories": [
            {"name": c["name"], "benchmarks": [dict(b) for b in c["benchmarks"]]}
            for c in CATEGORIES
        ],
    }
    section.update(overrides)
    return section


def _bad_benchmark(**fields: Any) -> dict[str, Any]:
    section = _section()
    section["categories"][1]["benchmarks"][0] = {"name": "piqa", "num_fewshot": 0, **fields}
    return section


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            _bad_benchmark(random_baselne=0.5),
            r"^eval_gauntlet\.categories\[1\]\.benchmarks\[0\]\.random_baselne is not a valid "
            r"key; did you mean 'random_baseline'\?",
        ),
        (
            _section(weigthing="EQUAL"),
            r"^eval_gauntlet\.weigthing is not a valid key; did you mean 'weighting'\?",
        ),
        (
            _section(categories=[{"name": "x", "benchmark": []}]),
            r"^eval_gauntlet\.categories\[0\]\.benchmark is not a valid key; "
            r"did you mean 'benchmarks'\?",
        ),
        (
            _bad_benchmark(random_baseline=1.0),
            r"^eval_gauntlet\.categories\[1\]\.benchmarks\[0\]\.random_baseline must be in \[0, 1\)",
        ),
        (
            _bad_benchmark(random_baseline=-0.1),
            r"^eval_gauntlet\.categories\[1\]\.benchmarks\[0\]\.random_baseline must be in \[0, 1\)",
        ),
        (
            _bad_benchmark(),
            r"^eval_gauntlet\.categories\[1\]\.benchmarks\[0\]\.random_baseline is missing",
        ),
        (_section(weighting="SAMPLES"), r"^eval_gauntlet\.weighting must be one of EQUAL, "),
        (
            _section(subtract_random_baseline="yes"),
            r"^eval_gauntlet\.subtract_random_baseline must be bool \(true or false\), got str "
            r"'yes'$",
        ),
        (
            _section(categories=[{"name": "x", "benchmarks": "piqa"}]),
            r"^eval_gauntlet\.categories\[0\]\.benchmarks must be list of mapping, got str",
        ),
        (
            _bad_benchmark(random_baseline=0.5, num_fewshot=-1),
            r"^eval_gauntlet\.categories\[1\]\.benchmarks\[0\]\.num_fewshot must be a "
            r"non-negative int, got int -1$",
        ),
        (
            _section(averages={"core": ["world_knowledge", "comonsense_reasoning"]}),
            r"^eval_gauntlet\.averages\.core\[1\] names unknown category 'comonsense_reasoning'; "
            r"did you mean 'commonsense_reasoning'\?",
        ),
    ],
)
def test_config_errors_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_gauntlet_config(section)
    assert "\n" not in str(err.value)


def test_baseline_optional_without_subtraction() -> None:
    config = parse_gauntlet_config(_bad_benchmark() | {"subtract_random_baseline": False})
    assert config.categories[1].benchmarks[0] == GauntletBenchmark("piqa", 0, 0.0)


def test_load_gauntlet_config_from_file(tmp_path: Path) -> None:
    file = tmp_path / "gauntlet.yaml"
    OmegaConf.save({"eval_gauntlet": _section(weighting="LOG_SAMPLE_SZ")}, file)
    config = load_gauntlet_config(str(file))
    assert config == parse_gauntlet_config(_section(weighting="LOG_SAMPLE_SZ"))
    assert config.weighting is Weighting.LOG_SAMPLE_SZ
    assert config.averages == {"core": ("world_knowledge", "commonsense_reasoning")}
    assert [b.label for b in config.categories[0].benchmarks] == [
        "jeopardy/3-shot",
        "arc_easy/3-shot",
    ]
    assert EvalGauntlet.from_config(file).config == config
    # A section given as OmegaConf (as a run config holds it) parses the same.
    assert load_gauntlet_config(OmegaConf.create(_section(weighting="LOG_SAMPLE_SZ"))) == config

    OmegaConf.save({"gauntlet": _section()}, file)
    with pytest.raises(ConfigError, match="no top-level 'eval_gauntlet:' section"):
        load_gauntlet_config(file)
    with pytest.raises(MissingFileError, match="missing.yaml"):
        load_gauntlet_config(tmp_path / "missing.yaml")
