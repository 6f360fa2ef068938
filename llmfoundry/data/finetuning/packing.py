"""Pack several finetuning examples into each row of a batch.

With ``packing_ratio: r`` the data loader hands :class:`BinPackCollator` ``int(r x
device_batch_size)`` examples at a time. It packs them, first-fit-decreasing (longest first,
each into the first row with room), into ``device_batch_size`` rows of ``max_seq_len`` tokens.
Examples that fit in no row are kept and packed first-come with the next call, so an example is
neither lost nor repeated, except those still waiting when the data ends (``leftovers``).

``max_leftover_bins_to_keep: k`` bounds what is carried over: the leftover examples are packed
into rows ("bins") of their own, first-fit-decreasing, and only the examples of the ``k``
fullest bins are kept; the others are discarded, counted (``discarded_examples``,
``discarded_tokens``) and logged sparingly. None (the default) keeps them all; 0 carries
nothing over. An example with no target token left within ``max_seq_len`` (only possible from
MDS, see :mod:`.collator`) is not packed at all.

``sequence_id`` numbers the examples of a row 0, 1, 2, ... and is **-1 on padding**; a model
with ``attn_uses_sequence_id`` lets a token attend only within its own example. Each example's
first label is already -100 (see :mod:`.collator`), so no example is scored from the one before.

``packing_ratio: auto`` (:func:`auto_packing_ratio`) simulates the packer on a sample of the
data for every candidate batch size ``n = device_batch_size .. device_batch_size x max_ratio``
(``max_ratio = max_seq_len // shortest example``, capped at :data:`MAX_AUTO_RATIO`) and picks
the largest ``n`` for which every simulated batch packs all of its examples (nothing carried
over); the ratio is ``n / device_batch_size`` (1 means no packing).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from llmfoundry.data.finetuning.collator import Seq2SeqFinetuningCollator
from llmfoundry.utils.config_checks import NonNegativeInt, check_value
from llmfoundry.utils.constants import IGNORE_INDEX

logger = logging.getLogger(__name__)

PAD_SEQUENCE_ID = -1
MAX_AUTO_RATIO = 32
Packed = tuple[list[int], list[int]]  # (input_ids, labels) of one example


def first_fit_decreasing(
    lengths: Sequence[int], num_bins: int, capacity: int
) -> tuple[list[list[int]], list[int]]:
    """Assign items to at most ``num_bins`` bins of ``capacity``, longest first.

    Args:
        lengths: each item's size (each at most ``capacity``).
        num_bins: the number of bins.
        capacity: each bin's size.

    Returns:
        ``(bins, leftover)``: item indices per bin (in placement order) and the indices that
        fit nowhere, in their original order.
    """
    bins: list[list[int]] = [[] for _ in range(num_bins)]
    room = [capacity] * num_bins
    leftover: list[int] = []
    # Stable sort: equal lengths keep arrival order, so carried-over items go first.
    for item in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b in range(num_bins):
            if lengths[item] <= room[b]:
                bins[b].append(item)
                room[b] -= lengths[item]
                break
        else:
            leftover.append(item)
    return bins, sorted(leftover)


class BinPackCollator:
    """Pack examples into ``device_batch_size`` rows (see the module docstring).

    Args:
        collator: the unpacked collator (its masking, truncation and pad id are used).
        device_batch_size: rows per batch.
        max_leftover_bins_to_keep: how many bins of leftover examples to carry over to the
            next batch (None: all of them).

    Attributes:
        leftovers: examples waiting for the next batch (``(input_ids, labels)``).
        tokens_real: non-padding tokens emitted so far.
        tokens_total: tokens (rows x ``max_seq_len``) emitted so far.
        discarded_examples: leftover examples discarded by ``max_leftover_bins_to_keep``.
        discarded_tokens: their tokens.
        skipped_untrainable: examples not packed because no target token was left.

    Raises:
        ConfigError: if ``max_leftover_bins_to_keep`` is not None or an integer >= 0.
    """

    def __init__(
        self,
        collator: Seq2SeqFinetuningCollator,
        device_batch_size: int,
        max_leftover_bins_to_keep: int | None = None,
    ) -> None:
        if not collator.decoder_only_format:
            raise ValueError("packing needs decoder_only_format: true")
        check_value(max_leftover_bins_to_keep, NonNegativeInt | None, "max_leftover_bins_to_keep")
        self.collator = collator
        self.device_batch_size = device_batch_size
        self.max_leftover_bins_to_keep = max_leftover_bins_to_keep
        self.leftovers: list[Packed] = []
        self.tokens_real = 0
        self.tokens_total = 0
        self.discarded_examples = 0
        self.discarded_tokens = 0
        self.skipped_untrainable = 0
        self._discard_events = 0

    @property
    def efficiency(self) -> float:
        """The fraction of emitted tokens that are not padding."""
        return self.tokens_real / self.tokens_total if self.tokens_total else 0.0

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Pack this call's examples and any leftovers into one batch.

        Returns:
            ``input_ids``, ``attention_mask``, ``labels`` and ``sequence_id``, each
            ``(device_batch_size, max_seq_len)`` int64.
        """
        fresh = self.collator.batch_sequences(examples)
        self.skipped_untrainable += sum(1 for *_, trainable in fresh if not trainable)
        items = self.leftovers + [(ids, labels) for ids, labels, trainable in fresh if trainable]
        max_seq_len = self.collator.max_seq_len
        bins, leftover = first_fit_decreasing(
            [len(ids) for ids, _ in items], self.device_batch_size, max_seq_len
        )
        self.leftovers = self._keep_leftovers([items[i] for i in leftover])
        batch = self._rows([[items[i] for i in row] for row in bins])
        real = int(batch["attention_mask"].sum().item())
        self.tokens_real += real
        self.tokens_total += batch["input_ids"].numel()
        logger.debug(
            "packed %d examples (%d carried over): %.1f%% of tokens are not padding "
            "(%.1f%% so far)",
            len(items) - len(leftover),
            len(self.leftovers),
            100 * real / batch["input_ids"].numel(),
            100 * self.efficiency,
        )
        return batch

    def _keep_leftovers(self, leftovers: list[Packed]) -> list[Packed]:
        """The leftovers of the ``max_leftover_bins_to_keep`` fullest bins, in arrival order."""
        keep = self.max_leftover_bins_to_keep
        if keep is None or not leftovers:
            return leftovers
        lengths = [len(ids) for ids, _ in leftovers]
        bins, _ = first_fit_decreasing(lengths, len(leftovers), self.collator.max_seq_len)
        # Fullest first; the sort is stable, so equal bins keep first-fit order.
        bins = sorted((b for b in bins if b), key=lambda b: -sum(lengths[i] for i in b))
        kept = sorted(i for b in bins[:keep] for i in b)
        discarded = len(leftovers) - len(kept)
        if discarded:
            self.discarded_examples += discarded
            self.discarded_tokens += sum(lengths) - sum(lengths[i] for i in kept)
            self._discard_events += 1
            if self._discard_events & (self._discard_events - 1) == 0:  # 1, 2, 4, 8, ...
                logger.info(
                    "packing: max_leftover_bins_to_keep=%d discarded %d leftover examples "
                    "(%d tokens) so far, in %d batches that had more leftovers than that",
                    keep,
                    self.discarded_examples,
                    self.discarded_tokens,
                    self._discard_events,
                )
        return [leftovers[i] for i in kept]

    def _rows(self, rows: Sequence[Sequence[Packed]]) -> dict[str, torch.Tensor]:
        shape = (len(rows), self.collator.max_seq_len)
        input_ids = torch.full(shape, self.collator.pad_token_id, dtype=torch.int64)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.int64)
        attention_mask = torch.zeros(shape, dtype=torch.int64)
        sequence_id = torch.full(shape, PAD_SEQUENCE_ID, dtype=torch.int64)
        for r, row in enumerate(rows):
            start = 0
            for doc, (ids, row_labels) in enumerate(row):
                end = start + len(ids)
                input_ids[r, start:end] = torch.as_tensor(ids, dtype=torch.int64)
                labels[r, start:end] = torch.as_tensor(row_labels, dtype=torch.int64)
                attention_mask[r, start:end] = 1
                sequence_id[r, start:end] = doc
                start = end
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "sequence_id": sequence_id,
        }


def simulate_packing(
    lengths: Sequence[int], examples_per_batch: int, device_batch_size: int, capacity: int
) -> tuple[bool, float]:
    """Run the packer over ``lengths`` in batches of ``examples_per_batch``.

    Returns:
        ``(no_carry_over, efficiency)``: whether every batch packed all of its examples, and
        the fraction of non-padding tokens over the simulated batches.
    """
    carried: list[int] = []
    real = total = 0
    no_carry_over = True
    for start in range(0, len(lengths) - examples_per_batch + 1, examples_per_batch):
        items = carried + list(lengths[start : start + examples_per_batch])
        bins, leftover = first_fit_decreasing(items, device_batch_size, capacity)
        carried = [items[i] for i in leftover]
        no_carry_over = no_carry_over and not leftover
        real += sum(items[i] for row in bins for i in row)
        total += device_batch_size * capacity
    return no_carry_over, (real / total if total else 0.0)


def auto_packing_ratio(lengths: Sequence[int], device_batch_size: int, max_seq_len: int) -> float:
    """The largest packing ratio that never carries an example over, on ``lengths``.

    Args:
        lengths: token counts (after truncation) of a sample of the dataset, in loader order.
        device_batch_size: rows per batch.
        max_seq_len: tokens per row.

    Returns:
        ``n / device_batch_size`` for the largest candidate ``n`` (see the module docstring);
        1.0 when no candidate above ``device_batch_size`` qualifies or the sample is too small.
    """
    if not lengths:
        return 1.0
    max_ratio = min(MAX_AUTO_RATIO, max(1, max_seq_len // max(1, min(lengths))))
    best = device_batch_size
    for examples_per_batch in range(device_batch_size + 1, device_batch_size * max_ratio + 1):
        if examples_per_batch > len(lengths):
            break
        no_carry_over, _ = simulate_packing(
            lengths, examples_per_batch, device_batch_size, max_seq_len
        )
        if no_carry_over:
            best = examples_per_batch
    ratio = best / device_batch_size
    # The loader packs int(ratio x device_batch_size) examples: make that give ``best`` back
    # (61 / 7 * 7 is 60.99999999999999 in floating point).
    while int(ratio * device_batch_size) < best:
        ratio = math.nextafter(ratio, math.inf)
    _, efficiency = simulate_packing(lengths, best, device_batch_size, max_seq_len)
    logger.info(
        "packing_ratio: auto chose %.3g (%d examples per batch of %d rows) from %d sampled "
        "examples; %.1f%% of tokens are not padding",
        ratio,
        best,
        device_batch_size,
        len(lengths),
        100 * efficiency,
    )
    return ratio
