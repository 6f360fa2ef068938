"""A tiny Composer training run on CPU (linear classifier, synthetic data) to drive loggers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from composer import Trainer
from composer.loggers import LoggerDestination
from composer.models import ComposerClassifier
from composer.optim import LinearScheduler
from torch.utils.data import DataLoader, TensorDataset

from tests.fixtures import fit_closed

NUM_FEATURES = 8
NUM_CLASSES = 3
BATCH_SIZE = 4
TRAIN_LOSS = "loss/train/total"


def synthetic_loader(num_samples: int, seed: int) -> DataLoader:
    """Random features with labels from a fixed linear rule, so the loss can go down."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_samples, NUM_FEATURES, generator=generator)
    labels = (features[:, :NUM_CLASSES]).argmax(dim=1)
    return DataLoader(TensorDataset(features, labels), batch_size=BATCH_SIZE)


def tiny_classifier() -> ComposerClassifier:
    """A linear classifier of ``NUM_FEATURES`` features into ``NUM_CLASSES``, seeded 0."""
    torch.manual_seed(0)
    return ComposerClassifier(torch.nn.Linear(NUM_FEATURES, NUM_CLASSES), num_classes=NUM_CLASSES)


def fit_tiny_run(
    loggers: Sequence[LoggerDestination], max_batches: int = 4, run_name: str = "tiny-run"
) -> Trainer:
    """Fit ``max_batches`` batches with an eval every 2 batches and a linearly decaying lr.

    Returns the trainer, already closed (so loggers have flushed and finished their runs).
    """
    model = tiny_classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    return fit_closed(
        model,
        run_name=run_name,
        train_dataloader=synthetic_loader(BATCH_SIZE * max_batches, seed=1),
        eval_dataloader=synthetic_loader(BATCH_SIZE * 2, seed=2),
        eval_interval="2ba",
        optimizers=optimizer,
        schedulers=LinearScheduler(alpha_i=1.0, alpha_f=0.1),
        max_duration=f"{max_batches}ba",
        loggers=list(loggers),
    )
