"""Properties of finetuning packing (``BinPackCollator``) over several calls, for random examples.

Every trainable example comes out exactly once, unchanged (its ids and labels as the unpacked
collator makes them), or is still waiting in ``leftovers`` at the end, or was counted as
discarded by ``max_leftover_bins_to_keep``; ``sequence_id`` separates the examples of a row
(0, 1, ... then -1 on padding) and matches the attention mask; no example's first token is
scored from the one before it; a carried-over example fit in no row of its batch.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import torch
from hypothesis import example as example_case
from hypothesis import given
from hypothesis import strategies as st

from llmfoundry.data.finetuning.collator import Seq2SeqFinetuningCollator
from llmfoundry.data.finetuning.packing import (
    MAX_AUTO_RATIO,
    BinPackCollator,
    auto_packing_ratio,
    simulate_packing,
)

from .strategies import FAST, IGNORE, example, target_prompts, target_responses

PAD = 0
EOS = 1
Seq = tuple[tuple[int, ...], tuple[int, ...]]


def _unpack(batch: dict[str, torch.Tensor]) -> list[Seq]:
    """Each example of a packed batch, read back by its sequence_id."""
    found = []
    for row in range(batch["input_ids"].shape[0]):
        seq = batch["sequence_id"][row]
        for doc in range(int(seq.max()) + 1):
            where = seq == doc
            found.append(
                (
                    tuple(batch["input_ids"][row][where].tolist()),
                    tuple(batch["labels"][row][where].tolist()),
                )
            )
    return found


def _check_rows(batch: dict[str, torch.Tensor], rows: int, width: int) -> None:
    """Shapes, sequence_id runs 0, 1, ... then -1 padding, and the pad/label/mask agreement."""
    for key in ("input_ids", "attention_mask", "labels", "sequence_id"):
        assert batch[key].shape == (rows, width)
        assert batch[key].dtype == torch.int64
    for row in range(rows):
        seq = batch["sequence_id"][row].tolist()
        real = [s for s in seq if s != -1]
        assert seq == real + [-1] * (width - len(real))  # padding on the right only
        assert all(b - a in (0, 1) for a, b in itertools.pairwise(real))
        assert real[:1] in ([], [0])
        pad = batch["sequence_id"][row] == -1
        assert torch.equal(batch["attention_mask"][row] == 0, pad)
        assert (batch["input_ids"][row][pad] == PAD).all()
        assert (batch["labels"][row][pad] == IGNORE).all()
        starts = torch.ones(width, dtype=torch.bool)
        starts[1:] = batch["sequence_id"][row, 1:] != batch["sequence_id"][row, :-1]
        assert (batch["labels"][row][starts & ~pad] == IGNORE).all()


@FAST
@given(
    calls=st.lists(st.lists(example, min_size=1, max_size=6), min_size=1, max_size=4),
    rows=st.integers(1, 3),
    max_seq_len=st.integers(4, 20),
    keep=st.sampled_from([None, 0, 1, 2]),
    prompts=target_prompts,
    responses=target_responses,
)
def test_every_example_is_emitted_once_carried_or_counted_as_discarded(
    calls: list[list[dict[str, Any]]],
    rows: int,
    max_seq_len: int,
    keep: int | None,
    prompts: str,
    responses: str,
) -> None:
    collator = Seq2SeqFinetuningCollator(
        PAD, max_seq_len, prompts, responses, eos_token_id=EOS, track_truncation=True
    )
    reference = Seq2SeqFinetuningCollator(PAD, max_seq_len, prompts, responses, eos_token_id=EOS)
    packer = BinPackCollator(collator, rows, max_leftover_bins_to_keep=keep)
    expected: Counter[Seq] = Counter()
    untrainable = 0
    emitted: Counter[Seq] = Counter()
    real_tokens = 0
    for examples in calls:
        for ex in examples:
            ids, labels = reference.sequence(ex)
            if any(label != IGNORE for label in labels):
                expected[(tuple(ids), tuple(labels))] += 1
            else:
                untrainable += 1
        batch = packer(examples)
        _check_rows(batch, rows, max_seq_len)
        emitted += Counter(_unpack(batch))
        real_tokens += int(batch["attention_mask"].sum())
        most_room = max_seq_len - int(batch["attention_mask"].sum(dim=1).min())
        for ids, _ in packer.leftovers:  # a carried-over example fit in no row
            assert len(ids) > most_room
    waiting = Counter((tuple(ids), tuple(labels)) for ids, labels in packer.leftovers)
    assert packer.skipped_untrainable == untrainable
    assert not (emitted + waiting) - expected  # nothing invented or repeated
    lost = expected - (emitted + waiting)
    assert lost.total() == packer.discarded_examples
    assert sum(len(ids) * n for (ids, _), n in lost.items()) == packer.discarded_tokens
    if keep is None:
        assert packer.discarded_examples == 0
    assert packer.tokens_real == real_tokens
    assert packer.tokens_total == len(calls) * rows * max_seq_len


@FAST
@given(
    lengths=st.lists(st.integers(1, 8), min_size=1, max_size=70),
    device_batch_size=st.integers(1, 12),
    max_seq_len=st.integers(8, 24),
)
@example_case(lengths=[1] * 61, device_batch_size=7, max_seq_len=9)  # 61 / 7 * 7 == 60.99999...
def test_auto_packing_ratio_gives_the_loader_the_largest_batch_that_never_carries_over(
    lengths: list[int], device_batch_size: int, max_seq_len: int
) -> None:
    """The loader packs ``int(ratio x device_batch_size)`` examples per batch: that is the
    largest candidate count whose simulated batches carry nothing over."""
    ratio = auto_packing_ratio(lengths, device_batch_size, max_seq_len)
    used = int(ratio * device_batch_size)
    assert used >= device_batch_size
    largest = device_batch_size * min(MAX_AUTO_RATIO, max_seq_len // min(lengths))
    fits = [
        n
        for n in range(device_batch_size + 1, min(largest, len(lengths)) + 1)
        if simulate_packing(lengths, n, device_batch_size, max_seq_len)[0]
    ]
    assert used == max(fits, default=device_batch_size)
