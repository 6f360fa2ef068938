"""Bin packing of finetuning examples: sequence ids, no example lost, and loss parity with MPT."""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import cast

import pytest
import torch
import torch.nn.functional as F

from llmfoundry.data.finetuning import (
    BinPackCollator,
    Seq2SeqFinetuningCollator,
    auto_packing_ratio,
    first_fit_decreasing,
)
from llmfoundry.data.finetuning.collator import IGNORE_INDEX
from llmfoundry.data.finetuning.packing import PAD_SEQUENCE_ID
from llmfoundry.utils.exceptions import ConfigError

PAD = 1
X = IGNORE_INDEX
MAX_SEQ_LEN = 32
VOCAB = 64


def random_examples(count: int, seed: int, longest: int = 14) -> list[dict]:
    """Examples of 3..longest tokens with ids in [2, VOCAB); each starts with a unique marker."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        prompt_len = rng.randint(1, longest // 2)
        response_len = rng.randint(1, longest // 2)
        prompt = [rng.randrange(2, VOCAB) for _ in range(prompt_len)]
        response = [rng.randrange(2, VOCAB) for _ in range(response_len)]
        examples.append({"turns": [{"input_ids": prompt, "labels": response}]})
    return examples


def unpack(batch: dict[str, torch.Tensor]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (input_ids, labels) of every example in a packed batch, read back by sequence_id."""
    found = []
    for row in range(batch["input_ids"].shape[0]):
        seq = batch["sequence_id"][row]
        for doc in range(int(seq.max().item()) + 1):
            where = seq == doc
            found.append(
                (
                    tuple(batch["input_ids"][row][where].tolist()),
                    tuple(batch["labels"][row][where].tolist()),
                )
            )
    return found


def test_first_fit_decreasing_places_longest_first_and_returns_the_rest() -> None:
    bins, leftover = first_fit_decreasing([5, 9, 3, 8, 4], num_bins=2, capacity=10)
    assert bins == [[1], [3]]  # 9 and 8 take a bin each; nothing else fits beside them
    assert leftover == [0, 2, 4]
    bins, leftover = first_fit_decreasing([5, 2, 3, 4], num_bins=2, capacity=7)
    assert bins == [[0, 1], [3, 2]] and leftover == []


def test_sequence_ids_number_documents_and_mark_padding() -> None:
    collator = BinPackCollator(Seq2SeqFinetuningCollator(PAD, 10), device_batch_size=1)
    examples = [
        {"turns": [{"input_ids": [5, 6], "labels": [7]}]},
        {"turns": [{"input_ids": [8], "labels": [9, 10, 11]}]},
    ]
    batch = collator(examples)
    # Longest first: the 4-token example is document 0.
    assert batch["input_ids"].tolist() == [[8, 9, 10, 11, 5, 6, 7, PAD, PAD, PAD]]
    assert batch["sequence_id"].tolist() == [[0, 0, 0, 0, 1, 1, 1, -1, -1, -1]]
    assert batch["attention_mask"].tolist() == [[1] * 7 + [0] * 3]
    # Each document's first label is masked: it is not predicted from the previous document.
    assert batch["labels"].tolist() == [[X, 9, 10, 11, X, X, 7, X, X, X]]


def test_no_example_is_lost_or_repeated_across_batches() -> None:
    examples = random_examples(60, seed=1, longest=20)
    base = Seq2SeqFinetuningCollator(PAD, MAX_SEQ_LEN, "all", "all")
    collator = BinPackCollator(base, device_batch_size=2)
    emitted = []
    for start in range(0, len(examples), 6):  # packing_ratio 3
        batch = collator(examples[start : start + 6])
        assert batch["input_ids"].shape == (2, MAX_SEQ_LEN)
        seq = batch["sequence_id"]
        assert torch.equal(seq != PAD_SEQUENCE_ID, batch["attention_mask"].bool())
        emitted += unpack(batch)
    expected = Counter(tuple(map(tuple, base.sequence(e))) for e in examples)
    got = Counter(emitted) + Counter(tuple(map(tuple, s)) for s in collator.leftovers)
    assert got == expected
    assert collator.leftovers, "ratio 3 on examples this long must carry some over"
    assert 0.5 < collator.efficiency <= 1.0


def test_auto_packing_ratio_is_the_largest_with_nothing_carried_over() -> None:
    # Every example is 8 tokens: exactly 4 fit a 32-token row, so the answer is 4.
    assert auto_packing_ratio([8] * 400, device_batch_size=2, max_seq_len=32) == 4.0
    # Examples filling a row cannot be packed.
    assert auto_packing_ratio([32] * 100, device_batch_size=2, max_seq_len=32) == 1.0
    # 6 examples of 10 tokens fit 2 rows of 32 (3 each); a 7th would be carried over.
    assert auto_packing_ratio([10] * 300, device_batch_size=2, max_seq_len=32) == 3.0


@pytest.mark.parametrize(("target_prompts", "target_responses"), [("none", "last"), ("all", "all")])
def test_packed_loss_equals_the_sum_of_unpacked_losses(
    target_prompts: str, target_responses: str
) -> None:
    from tests.fixtures import tiny_config, tiny_model

    config = tiny_config(
        {"alibi": True, "attn_uses_sequence_id": True}, vocab_size=VOCAB, max_seq_len=MAX_SEQ_LEN
    )
    model = tiny_model(config)
    base = Seq2SeqFinetuningCollator(PAD, MAX_SEQ_LEN, target_prompts, target_responses)
    examples = random_examples(12, seed=2)
    collator = BinPackCollator(base, device_batch_size=3)
    batch = collator(examples)
    packed = unpack(batch)
    assert len(packed) >= 8 and len(packed) + len(collator.leftovers) == len(examples)
    sequences = Counter(tuple(map(tuple, base.sequence(e))) for e in examples)
    assert Counter(packed) <= sequences

    def summed_loss(input_ids, labels, attention_mask, sequence_id) -> torch.Tensor:
        with torch.no_grad():
            logits = model(input_ids, attention_mask=attention_mask, sequence_id=sequence_id).logits
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, VOCAB).float(),
            labels[:, 1:].reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )

    packed_loss = summed_loss(
        batch["input_ids"], batch["labels"], batch["attention_mask"], batch["sequence_id"]
    )
    unpacked_loss = torch.zeros(())
    for ids, labels in packed:  # each packed example on its own, unpadded
        ids_t = torch.tensor([ids])
        unpacked_loss += summed_loss(
            ids_t, torch.tensor([labels]), torch.ones_like(ids_t), torch.zeros_like(ids_t)
        )
    assert packed_loss.item() > 0
    assert abs(packed_loss.item() - unpacked_loss.item()) < 1e-4


def example_of_length(length: int, marker: int) -> dict:
    """A one-turn example of ``length`` tokens (prompt: the marker; response: the rest)."""
    return {"turns": [{"input_ids": [marker], "labels": [2] * (length - 1)}]}


def test_max_leftover_bins_to_keep_keeps_the_fullest_leftover_bins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One 10-token row; 10 fills it and 7, 6, 4, 3, 2 are left over. Packed into bins of 10
    # (first-fit-decreasing) they make [7, 3], [6, 4], [2]: the two fullest hold 7, 3, 6, 4.
    lengths = [10, 7, 6, 4, 3, 2]
    examples = [example_of_length(n, 40 + i) for i, n in enumerate(lengths)]
    base = Seq2SeqFinetuningCollator(PAD, 10)

    keep_all = BinPackCollator(base, device_batch_size=1)
    keep_all(examples)
    assert [len(ids) for ids, _ in keep_all.leftovers] == [7, 6, 4, 3, 2]
    assert keep_all.discarded_examples == 0

    keep_two = BinPackCollator(base, device_batch_size=1, max_leftover_bins_to_keep=2)
    with caplog.at_level(logging.INFO, logger="llmfoundry.data.finetuning"):
        keep_two(examples)
    # Kept in arrival order; the 2-token example is discarded, counted and logged.
    assert [ids[0] for ids, _ in keep_two.leftovers] == [41, 42, 43, 44]
    assert (keep_two.discarded_examples, keep_two.discarded_tokens) == (1, 2)
    assert "max_leftover_bins_to_keep=2 discarded 1 leftover examples (2 tokens)" in caplog.text
    # The next batch starts with the kept leftovers.
    batch = keep_two([])
    assert batch["input_ids"][0, 0].item() == 41  # the 7-token example, longest first

    keep_none = BinPackCollator(base, device_batch_size=1, max_leftover_bins_to_keep=0)
    keep_none(examples)
    assert keep_none.leftovers == [] and keep_none.discarded_examples == 5


@pytest.mark.parametrize("value", [-1, 2.0, False])
def test_max_leftover_bins_to_keep_must_be_a_whole_number(value: object) -> None:
    with pytest.raises(
        ConfigError, match=r"max_leftover_bins_to_keep must be a non-negative int or null, got "
    ):
        # Deliberately not an int (what a YAML could hold): the check under test refuses it.
        BinPackCollator(Seq2SeqFinetuningCollator(PAD, 10), 1, cast(int, value))


def test_packing_leaves_out_examples_without_a_target() -> None:
    # max_seq_len 4: the 5-token prompt fills it, so its response is cut away; the prompt is
    # shorter than the length>=6 rule, so no target is left.
    untrainable = {"turns": [{"input_ids": [5, 6, 7, 8, 9], "labels": [10]}]}
    trainable = {"turns": [{"input_ids": [11], "labels": [12]}]}
    base = Seq2SeqFinetuningCollator(PAD, 4, "length>=6", "last", track_truncation=True)
    collator = BinPackCollator(base, device_batch_size=1)
    batch = collator([untrainable, trainable])
    assert batch["input_ids"].tolist() == [[11, 12, PAD, PAD]]
    assert collator.skipped_untrainable == 1 and collator.leftovers == []
    assert base.stats is not None
    assert (base.stats.truncated, base.stats.untrainable) == (1, 1)
