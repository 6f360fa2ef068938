"""A tiny MPT causal LM, fixed token batches and a CPU trainer around them (fast callback tests)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from composer import Trainer
from composer.core import Callback, State
from composer.loggers import Logger, LoggerDestination
from torch.utils.data import DataLoader

from llmfoundry.models.hf import ComposerMPTCausalLM

VOCAB, SEQ_LEN, BATCH = 64, 8, 2


def tiny_mpt(seed: int = 0, **overrides: Any) -> ComposerMPTCausalLM:
    """A one-layer, d_model 16 MPT (torch attention, plain cross-entropy unless overridden)."""
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 1,
        "expansion_ratio": 2,
        "max_seq_len": SEQ_LEN,
        "vocab_size": VOCAB,
        "attn_config": {"attn_impl": "torch"},
        "loss_fn": "torch_crossentropy",
    }
    kwargs.update(overrides)
    return ComposerMPTCausalLM(**kwargs)


def token_loader(
    n_batches: int, seed: int = 0, columns: Mapping[str, torch.Tensor] | None = None
) -> DataLoader:
    """``n_batches`` batches of random ``input_ids`` (labels = ids, mask = 1), in order.

    ``columns`` replace or add whole columns (``(n_batches * BATCH, SEQ_LEN)`` tensors).
    """
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n_batches * BATCH, SEQ_LEN), generator=generator)
    table = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    table.update(columns or {})
    rows = [{name: column[i] for name, column in table.items()} for i in range(len(ids))]
    return DataLoader(cast(Any, rows), batch_size=BATCH)


def lm_trainer(
    model: ComposerMPTCausalLM,
    loader: DataLoader,
    callbacks: Sequence[Callback],
    max_duration: str,
    loggers: Sequence[LoggerDestination] = (),
    **trainer_kwargs: Any,
) -> Trainer:
    """A CPU trainer (SGD, lr 0.1) without console output."""
    optimizer = trainer_kwargs.pop("optimizers", None) or torch.optim.SGD(
        model.parameters(), lr=0.1
    )
    return Trainer(
        model=model,
        train_dataloader=loader,
        max_duration=max_duration,
        optimizers=optimizer,
        callbacks=list(callbacks),
        loggers=list(loggers),
        progress_bar=False,
        log_to_console=False,
        device="cpu",
        seed=1,
        **trainer_kwargs,
    )


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state dict."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


class WeightsAt(Callback):
    """Copies of the model's weights at every batch end: ``{batch number: state dict}``."""

    def __init__(self) -> None:
        self.by_batch: dict[int, dict[str, torch.Tensor]] = {}

    def batch_end(self, state: State, logger: Logger) -> None:
        del logger
        self.by_batch[int(state.timestamp.batch)] = weights(state.model)


def checkpoint_file(folder: Path, batch: int) -> Path:
    """Composer's default checkpoint name for a single-process run, in ``folder``."""
    return folder / f"ep0-ba{batch}-rank0.pt"
