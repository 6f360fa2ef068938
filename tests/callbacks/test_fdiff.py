"""fdiff_metrics logs each loss/metric minus its previous value, per evaluator."""

from __future__ import annotations

import itertools

import torch
from composer import Evaluator
from composer.loggers import InMemoryLogger

from llmfoundry.utils.builders import build_callbacks
from tests.fixtures import fit_closed
from tests.loggers.tiny_run import BATCH_SIZE, synthetic_loader, tiny_classifier

N_BATCHES = 6


def _fit(section: dict[str, object]) -> InMemoryLogger:
    """6 batches of a linear classifier, two evaluators (different data) every 2 batches."""
    model = tiny_classifier()
    logged = InMemoryLogger()
    fit_closed(
        model,
        train_dataloader=synthetic_loader(BATCH_SIZE * N_BATCHES, seed=1),
        eval_dataloader=[
            Evaluator(label="eval_a", dataloader=synthetic_loader(8, seed=2)),
            Evaluator(label="eval_b", dataloader=synthetic_loader(8, seed=3)),
        ],
        eval_interval="2ba",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.5),
        max_duration=f"{N_BATCHES}ba",
        callbacks=build_callbacks({"fdiff_metrics": section}),
        loggers=[logged],
    )
    return logged


def _values(logged: InMemoryLogger, key: str) -> list[float]:
    return [float(value) for _, value in logged.data[key]]


def _differences(values: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(values)]


def test_train_and_eval_differences_are_exact() -> None:
    logged = _fit({"diff_train_metrics": True})

    losses = _values(logged, "loss/train/total")
    assert len(losses) == N_BATCHES
    assert _values(logged, "loss/train/total_fdiff") == _differences(losses)

    # One value per batch (Composer logs the last one again at the epoch's end).
    accuracy = _values(logged, "metrics/train/MulticlassAccuracy")[:N_BATCHES]
    assert _values(logged, "metrics/train/MulticlassAccuracy_fdiff") == _differences(accuracy)

    for label in ("eval_a", "eval_b"):
        for metric in ("CrossEntropy", "MulticlassAccuracy"):
            values = _values(logged, f"metrics/{label}/{metric}")
            assert len(values) == 3  # batches 2, 4, 6
            # Each evaluator is compared with its own previous evaluation.
            assert _values(logged, f"metrics/{label}/{metric}_fdiff") == _differences(values)
    # The two evaluators' data differ, so mixing them up could not pass the check above.
    assert _values(logged, "metrics/eval_a/CrossEntropy") != _values(
        logged, "metrics/eval_b/CrossEntropy"
    )


def test_defaults_diff_only_eval_metrics() -> None:
    logged = _fit({})
    fdiff_keys = {key for key in logged.data if key.endswith("_fdiff")}
    assert fdiff_keys == {
        f"metrics/{label}/{metric}_fdiff"
        for label in ("eval_a", "eval_b")
        for metric in ("CrossEntropy", "MulticlassAccuracy")
    }
