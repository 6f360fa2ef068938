"""``loss_perp_v_len``: the training loss and perplexity at each position of the context.

Config (an entry of the ``callbacks:`` section)::

    callbacks:
      loss_perp_v_len:
        compute_batch_interval: 10   # measure every 10th batch (batches 0, 10, 20, ...)
        log_batch_interval: 100      # log the rows gathered so far every 100th batch
        ignore_index: -100           # label value that is not scored (the default)

On each measured batch (counting batches from 0) the callback takes the per-token
next-token loss of the training forward pass (no extra forward) and averages it over the
batch, per position, on every rank together. It keeps six rows per measured batch:

* ``mean_loss_v_len``, ``mean_perplexity_v_len``, ``sum_length``: by position in the
  ``max_seq_len`` window (perplexity is ``exp`` of each token's loss, averaged), and the number
  of scored tokens at each position;
* ``mean_loss_seq_id_v_len``, ``mean_perplexity_seq_id_v_len``, ``sum_length_seq_id``: the
  same by position within each packed document (the batch's ``sequence_id``; tokens whose
  ``sequence_id`` is -1 are padding and skipped). Without ``sequence_id`` these rows are all -1
  (the means) and 0 (the counts).

A position with no scored token gets -1. Every ``log_batch_interval``-th batch the rows gathered
so far are logged as tables ``metrics/train/LossPerpVLenTable/<row name>`` with columns
``context_length_0 ... context_length_<L-1>, batch_index`` through every logger destination
that records tables (MLflow, W&B, the in-memory logger). Each row describes only its own batch.
The model must be a causal LM wrapper (``mpt_causal_lm``, ``hf_causal_lm``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from composer.core import Callback, State
from composer.loggers import Logger
from composer.models import HuggingFaceModel
from composer.utils import dist

from llmfoundry.interfaces.checked_by_building import CheckedByBuilding
from llmfoundry.utils.config_checks import PositiveInt, check_arguments
from llmfoundry.utils.constants import IGNORE_INDEX
from llmfoundry.utils.exceptions import ConfigError

__all__ = ["LossPerpVsContextLengthLogger", "PositionLosses", "positions_in_sequence"]

KEY = "callbacks.loss_perp_v_len"
TABLE_PREFIX = "metrics/train/LossPerpVLenTable"


class LossPerpVsContextLengthLogger(CheckedByBuilding, Callback):
    """Log tables of the mean loss and perplexity at each context position.

    Args:
        log_batch_interval: log the gathered rows every this many batches.
        compute_batch_interval: measure every this many batches (at most ``log_batch_interval``).
        ignore_index: label value that is not scored.

    Raises:
        ConfigError: on a non-positive interval or ``compute_batch_interval`` larger than
            ``log_batch_interval``; (at ``init``) if the model is not a causal LM wrapper.
    """

    def __init__(
        self,
        log_batch_interval: PositiveInt,
        compute_batch_interval: PositiveInt,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        check_arguments(
            LossPerpVsContextLengthLogger,
            f"{KEY}.",
            log_batch_interval=log_batch_interval,
            compute_batch_interval=compute_batch_interval,
        )
        if compute_batch_interval > log_batch_interval:
            raise ConfigError(
                f"{KEY}.compute_batch_interval={compute_batch_interval} is larger than "
                f"log_batch_interval={log_batch_interval}; measure at least as often as you log"
            )
        self.log_batch_interval = log_batch_interval
        self.compute_batch_interval = compute_batch_interval
        self.ignore_index = ignore_index
        self.sums = PositionLosses()
        self.rows: dict[str, list[list[float]]] = {}  # gathered since the last log

    def init(self, state: State, logger: Logger) -> None:
        del logger
        if not isinstance(state.model, HuggingFaceModel):
            raise ConfigError(
                f"{KEY} needs a causal LM model (mpt_causal_lm, hf_causal_lm); "
                f"got {type(state.model).__name__}"
            )

    def after_backward(self, state: State, logger: Logger) -> None:
        del logger
        # Before BATCH_END the counter still holds the index of the batch being trained.
        if int(state.timestamp.batch) % self.compute_batch_interval != 0:
            return
        labels = state.batch["labels"]
        shift = bool(getattr(state.model, "shift_labels", True))
        targets = _shifted(labels, self.ignore_index) if shift else labels
        losses = _token_losses(state.outputs, targets, self.ignore_index)
        sequence_id = state.batch.get("sequence_id") if isinstance(state.batch, Mapping) else None
        self.sums.update(losses, targets != self.ignore_index, sequence_id)

    def batch_end(self, state: State, logger: Logger) -> None:
        index = int(state.timestamp.batch) - 1  # the counter was advanced before BATCH_END
        if index % self.compute_batch_interval == 0 and self.sums.width > 0:
            for name, values in self.sums.compute().items():
                self.rows.setdefault(name, []).append([*values.tolist(), index])
            self.sums = PositionLosses()
        if index % self.log_batch_interval == 0 and self.rows:
            if dist.get_global_rank() == 0:
                for name, rows in self.rows.items():
                    columns, rows = _table(rows, fill=0 if name.startswith("sum_") else -1)
                    logger.log_table(
                        columns=columns,
                        rows=rows,
                        name=f"{TABLE_PREFIX}/{name}",
                        step=int(state.timestamp.batch),
                    )
            self.rows = {}


def _table(rows: list[list[float]], fill: float) -> tuple[list[str], list[list[float]]]:
    """Columns and rows of one table; rows of shorter batches (padded data) get ``fill``."""
    width = max(len(row) for row in rows) - 1  # the last entry is the batch index
    padded = [[*row[:-1], *[fill] * (width + 1 - len(row)), row[-1]] for row in rows]
    return [*(f"context_length_{i}" for i in range(width)), "batch_index"], padded


class PositionLosses:
    """Sums of per-token losses, ``exp`` of them, and token counts, by position.

    ``totals`` is ``(6, positions)``: loss, perplexity and count by position in the window, then
    the same by position within each document (``sequence_id``).
    """

    def __init__(self) -> None:
        self.totals = torch.zeros(6, 0, dtype=torch.float64)

    @property
    def width(self) -> int:
        """The number of positions covered so far (0 before the first update)."""
        return self.totals.shape[1]

    def update(
        self, losses: torch.Tensor, scored: torch.Tensor, sequence_id: torch.Tensor | None
    ) -> None:
        """Add a ``(batch, seq)`` batch of per-token losses; ``scored`` marks the counted tokens."""
        losses = losses.detach().double()
        seq_len = losses.shape[1]
        self._widen(seq_len, losses.device)
        weights = scored.to(torch.float64)
        per_token = torch.stack([losses * weights, torch.exp(losses) * weights, weights])
        self.totals[:3, :seq_len] += per_token.sum(1)
        if sequence_id is None:
            return
        in_document = (sequence_id != -1).to(torch.float64)
        positions = positions_in_sequence(sequence_id).reshape(1, -1).expand(3, -1)
        by_document = (per_token * in_document).reshape(3, -1)
        self.totals[3:].scatter_add_(1, positions, by_document)

    def compute(self) -> dict[str, torch.Tensor]:
        """The six rows (summed over ranks): means by position (-1 where no token) and counts."""
        # Ranks (padded data) may have seen different lengths: agree on the longest first.
        width = torch.tensor([self.width], device=self.totals.device)
        dist.all_reduce(width, reduce_operation="MAX")
        self._widen(int(width.item()), self.totals.device)
        totals = self.totals.clone()
        dist.all_reduce(totals, reduce_operation="SUM")
        loss, perplexity, count, loss_seq, perplexity_seq, count_seq = totals.cpu()

        def mean(total: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            return torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, -1.0))

        return {
            "mean_loss_v_len": mean(loss, count),
            "mean_perplexity_v_len": mean(perplexity, count),
            "sum_length": count.long(),
            "mean_loss_seq_id_v_len": mean(loss_seq, count_seq),
            "mean_perplexity_seq_id_v_len": mean(perplexity_seq, count_seq),
            "sum_length_seq_id": count_seq.long(),
        }

    def _widen(self, seq_len: int, device: torch.device) -> None:
        """Grow the sums (zeros at the new positions) to cover ``seq_len`` positions."""
        extra = seq_len - self.width
        totals = self.totals.to(device)
        if extra > 0:
            totals = torch.cat([totals, totals.new_zeros(6, extra)], dim=1)
        self.totals = totals


def positions_in_sequence(sequence_id: torch.Tensor) -> torch.Tensor:
    """Each token's offset from the start of its run of equal ``sequence_id`` (its document)."""
    seq_len = sequence_id.shape[-1]
    index = torch.arange(seq_len, device=sequence_id.device).expand_as(sequence_id)
    starts = torch.ones_like(sequence_id, dtype=torch.bool)
    starts[..., 1:] = sequence_id[..., 1:] != sequence_id[..., :-1]
    run_start = torch.cummax(torch.where(starts, index, 0), dim=-1).values
    return index - run_start


def _shifted(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Next-token targets: position ``t`` holds ``labels[t + 1]``; the last is ``ignore_index``."""
    targets = torch.full_like(labels, ignore_index)
    targets[..., :-1] = labels[..., 1:]
    return targets


def _token_losses(outputs: Any, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``(batch, seq)`` cross-entropy of each position's prediction (0 where not scored).

    From the fused loss's ``token_losses`` when the forward computed them, else from the logits.
    """
    token_losses = getattr(outputs, "token_losses", None)
    if isinstance(token_losses, torch.Tensor):
        return token_losses.masked_fill(targets == ignore_index, 0.0)
    logits = outputs.get("logits") if isinstance(outputs, Mapping) else outputs
    if not isinstance(logits, torch.Tensor):
        raise ConfigError(
            f"{KEY}: the model's training outputs hold neither logits nor token losses"
        )
    if logits.shape[:2] != targets.shape:
        raise ConfigError(
            f"{KEY}: logits of shape {tuple(logits.shape)} do not match labels of shape "
            f"{tuple(targets.shape)}"
        )
    flat = F.cross_entropy(
        logits.detach().float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    )
    return flat.reshape(targets.shape)
