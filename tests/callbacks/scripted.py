"""A one-layer Composer model whose training loss the test scripts, and a trainer around it."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from composer import Trainer
from composer.core import Callback
from composer.loggers import LoggerDestination
from composer.models import ComposerModel
from torch.utils.data import DataLoader, TensorDataset

from tests.fixtures import cpu_trainer

N_FEATURES = 4


class ScriptedLossModel(ComposerModel):
    """Each batch holds one sample; the loss on sample ``i`` is ``losses.get(i, default)``.

    The gradient is that of a real squared-output loss scaled to the scripted value, so a NaN
    loss also poisons the weights after the optimizer step (as a real divergence would).

    Args:
        losses: scripted loss per sample index.
        default: loss of every other sample.
        sleep_s: seconds each forward sleeps (a slow step).
    """

    def __init__(
        self, losses: Mapping[int, float] | None = None, default: float = 1.0, sleep_s: float = 0.0
    ) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(N_FEATURES, 1)
        self.losses = dict(losses or {})
        self.default = default
        self.sleep_s = sleep_s

    def forward(self, batch: Any) -> Any:
        features, ids = batch
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return self.linear(features), ids

    def loss(self, outputs: Any, batch: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        del batch, args, kwargs
        prediction, ids = outputs
        real = prediction.pow(2).mean() + 1e-3
        target = self.losses.get(int(ids[0]), self.default)
        if math.isnan(target):
            return real * float("nan")
        return real * (target / real.detach())


def sample_loader(n_samples: int = 64) -> DataLoader:
    """Samples ``0..n_samples-1`` in order, one per batch: ``(features, index)``."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n_samples, N_FEATURES, generator=generator)
    return DataLoader(TensorDataset(features, torch.arange(n_samples)), batch_size=1)


def scripted_trainer(
    model: ScriptedLossModel,
    callbacks: Sequence[Callback],
    max_duration: str = "10ba",
    save_folder: Path | None = None,
    save_interval: str = "1000ba",
    loggers: Sequence[LoggerDestination] = (),
) -> Trainer:
    """A CPU trainer (SGD, lr 0.1) over :func:`sample_loader`."""
    return cpu_trainer(
        model,
        train_dataloader=sample_loader(),
        max_duration=max_duration,
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=list(callbacks),
        loggers=list(loggers),
        save_folder=None if save_folder is None else str(save_folder),
        save_interval=save_interval,
        seed=1,
    )


class BatchRecorder(Callback):
    """Records, at every batch end, the sample index, the batch counter and the weights."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.batches: list[int] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    def batch_end(self, state: Any, logger: Any) -> None:
        del logger
        self.samples.append(int(state.batch[1][0]))
        self.batches.append(int(state.timestamp.batch))
        self.weights.append({k: v.detach().clone() for k, v in state.model.state_dict().items()})
