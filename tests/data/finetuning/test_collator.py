"""Label masking, truncation and padding of the finetuning collator, on hand-made turns."""

from __future__ import annotations

import logging

import pytest
import torch

from llmfoundry.data.finetuning import (
    Seq2SeqFinetuningCollator,
    TargetPolicy,
    build_sequence,
    with_final_eos,
)
from llmfoundry.data.finetuning.collator import count_tokens_in_batch
from llmfoundry.data.finetuning.turns import is_trainable
from llmfoundry.utils.exceptions import ConfigError

X = -100
PAD = 1
EOS = 2
# Two turns: prompt [10, 11, 12] -> response [20, 21]; prompt [13] -> response [22, 23, 24].
TURNS = [
    {"input_ids": [10, 11, 12], "labels": [20, 21]},
    {"input_ids": [13], "labels": [22, 23, 24]},
]
INPUT_IDS = [10, 11, 12, 20, 21, 13, 22, 23, 24]


@pytest.mark.parametrize(
    ("target_prompts", "target_responses", "expected_labels"),
    [
        # The first token is never a target: nothing precedes it.
        ("none", "last", [X, X, X, X, X, X, 22, 23, 24]),
        ("none", "all", [X, X, X, 20, 21, X, 22, 23, 24]),
        ("all", "last", [X, 11, 12, X, X, 13, 22, 23, 24]),
        ("all", "all", [X, 11, 12, 20, 21, 13, 22, 23, 24]),
        # Only the 3-token prompt is long enough.
        ("length>=2", "all", [X, 11, 12, 20, 21, X, 22, 23, 24]),
        ("length>=1", "last", [X, 11, 12, X, X, 13, 22, 23, 24]),
        ("length>=4", "last", [X, X, X, X, X, X, 22, 23, 24]),
    ],
)
def test_labels_follow_target_settings(
    target_prompts: str, target_responses: str, expected_labels: list[int]
) -> None:
    collator = Seq2SeqFinetuningCollator(PAD, 12, target_prompts, target_responses)
    batch = collator([{"turns": TURNS}])
    assert batch["input_ids"][0].tolist() == [*INPUT_IDS, PAD, PAD, PAD]
    assert batch["labels"][0].tolist() == [*expected_labels, X, X, X]
    assert batch["attention_mask"][0].tolist() == [1] * 9 + [0] * 3


@pytest.mark.parametrize(
    ("prompts", "responses", "pattern"),
    [
        ("some", "last", r"target_prompts is 'some'; use none, all or length>=N"),
        ("length>=x", "last", r"target_prompts"),
        ("none", "first", r"target_responses is 'first'; use last or all"),
    ],
)
def test_bad_target_settings_are_config_errors(prompts: str, responses: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        TargetPolicy.from_config(prompts, responses)


def test_long_examples_keep_their_first_max_seq_len_tokens() -> None:
    policy = TargetPolicy.from_config("none", "last")
    ids, labels = build_sequence(TURNS, policy, 8)
    assert ids == INPUT_IDS[:8]  # the end of the last response is cut
    assert labels == [X, X, X, X, X, X, 22, 23]


def test_examples_without_a_target_within_max_seq_len_are_not_trainable() -> None:
    policy = TargetPolicy.from_config("none", "last")
    assert is_trainable(TURNS, policy, 7)  # one token of the last response survives
    assert not is_trainable(TURNS, policy, 6)  # everything before it fills max_seq_len
    # As in LLM Foundry, targets before the final response keep the example: the prompts ...
    assert is_trainable(TURNS, TargetPolicy.from_config("all", "last"), 6)
    # ... or the first response (tokens 3 and 4 of the cut sequence).
    assert is_trainable(TURNS, TargetPolicy.from_config("none", "all"), 6)
    assert not is_trainable(TURNS, TargetPolicy.from_config("none", "all"), 3)


def test_final_response_gets_eos_unless_it_ends_with_it() -> None:
    # LLM Foundry's converter writes responses without EOS; the collator appends it.
    collator = Seq2SeqFinetuningCollator(PAD, 12, eos_token_id=EOS)
    batch = collator([{"turns": TURNS}, {"turns": [{"input_ids": [5], "labels": [6, EOS]}]}])
    assert batch["input_ids"].tolist() == [
        [*INPUT_IDS, EOS, PAD, PAD],
        [5, 6, EOS] + [PAD] * 9,
    ]
    assert batch["labels"].tolist() == [
        [X, X, X, X, X, X, 22, 23, 24, EOS, X, X],
        [X, 6, EOS] + [X] * 9,
    ]
    # Only the final response gets one; without an EOS id nothing is appended.
    assert with_final_eos(TURNS, EOS)[0] == TURNS[0]
    assert with_final_eos(TURNS, None) is TURNS


def test_pad_to_longest_pads_to_the_batch_longest_example() -> None:
    short = {"turns": [{"input_ids": [5], "labels": [6, 7]}]}
    longest = Seq2SeqFinetuningCollator(PAD, 32, pad_to_longest=True)
    batch = longest([{"turns": TURNS}, short])
    assert batch["input_ids"].shape == (2, 9)
    assert batch["input_ids"][1].tolist() == [5, 6, 7] + [PAD] * 6
    assert batch["labels"][1].tolist() == [X, 6, 7] + [X] * 6
    assert longest([short])["input_ids"].shape == (1, 3)  # every batch, the first one too
    # Never wider than max_seq_len: a longer example is cut.
    assert Seq2SeqFinetuningCollator(PAD, 6, pad_to_longest=True)([short, {"turns": TURNS}])[
        "input_ids"
    ].shape == (2, 6)
    full = Seq2SeqFinetuningCollator(PAD, 32)([{"turns": TURNS}, short])
    assert full["input_ids"].shape == (2, 32)
    assert torch.equal(full["input_ids"][:, :9], batch["input_ids"])


def test_pad_trimming_keeps_the_first_batch_whole_then_trims_to_multiples_of_8() -> None:
    short = {"turns": [{"input_ids": [5], "labels": [6, 7]}]}
    trimming = Seq2SeqFinetuningCollator(PAD, 32, allow_pad_trimming=True)
    first = trimming([{"turns": TURNS}, short])
    assert first["input_ids"].shape == (2, 32)  # the first batch shows the memory peak
    second = trimming([{"turns": TURNS}, short])
    assert second["input_ids"].shape == (2, 16)  # 9 tokens, rounded up to 16
    assert torch.equal(second["labels"], first["labels"][:, :16])
    assert trimming([short])["input_ids"].shape == (1, 8)


def test_token_counts_exclude_padding() -> None:
    batch = Seq2SeqFinetuningCollator(PAD, 12)([{"turns": TURNS}])
    assert count_tokens_in_batch(batch) == {"total": 9, "loss_generating": 3}


def test_encoder_decoder_batches_split_prompt_and_response() -> None:
    collator = Seq2SeqFinetuningCollator(PAD, 4, decoder_only_format=False, eos_token_id=EOS)
    batch = collator([{"turns": [{"input_ids": [10, 11, 12, 13, 14], "labels": [20, 21]}]}])
    # The cut encoder input ends with EOS; the target gets its EOS.
    assert batch["input_ids"].tolist() == [[10, 11, 12, EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[20, 21, EOS, X]]
    # The target shifted right behind the decoder start (pad) token, -100 shown as pad.
    assert batch["decoder_input_ids"].tolist() == [[PAD, 20, 21, EOS]]
    assert batch["decoder_attention_mask"].tolist() == [[1, 1, 1, 0]]
    assert count_tokens_in_batch(batch) == {"total": 7, "loss_generating": 3}


def test_encoder_decoder_multi_turn_context_and_long_target() -> None:
    collator = Seq2SeqFinetuningCollator(PAD, 8, decoder_only_format=False, eos_token_id=EOS)
    long_target = {"turns": [{"input_ids": [5], "labels": [30, 31, 32, 33, 34, 35, 36, 37, 38]}]}
    batch = collator([{"turns": TURNS}, long_target])
    # Earlier turns (prompt and response) and the last prompt make the encoder input.
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21, 13, PAD, PAD], [5] + [PAD] * 7]
    assert batch["labels"].tolist() == [
        [22, 23, 24, EOS, X, X, X, X],
        [30, 31, 32, 33, 34, 35, 36, EOS],  # cut to 8 tokens, still ending with EOS
    ]
    assert batch["decoder_input_ids"][1].tolist() == [PAD, 30, 31, 32, 33, 34, 35, 36]
    longest = Seq2SeqFinetuningCollator(
        PAD, 32, decoder_only_format=False, eos_token_id=EOS, pad_to_longest=True
    )
    widths = {key: value.shape[1] for key, value in longest([{"turns": TURNS}]).items()}
    assert set(widths.values()) == {6}  # the longer side: the 6-token encoder input


def test_encoder_decoder_trimming_trims_encoder_and_decoder_separately() -> None:
    collator = Seq2SeqFinetuningCollator(
        PAD, 32, decoder_only_format=False, eos_token_id=EOS, allow_pad_trimming=True
    )
    examples = [{"turns": [{"input_ids": [5, 6, 7], "labels": list(range(30, 39))}]}]
    first = collator(examples)
    assert {value.shape[1] for value in first.values()} == {32}
    second = collator(examples)
    # 3 encoder tokens round up to 8; the 10-token target (EOS included) to 16.
    assert {k: v.shape[1] for k, v in second.items()} == {
        "input_ids": 8,
        "attention_mask": 8,
        "labels": 16,
        "decoder_input_ids": 16,
        "decoder_attention_mask": 16,
    }
    assert torch.equal(second["labels"], first["labels"][:, :16])


def test_truncation_stats_are_logged_sparingly(caplog: pytest.LogCaptureFixture) -> None:
    collator = Seq2SeqFinetuningCollator(PAD, 6, track_truncation=True)
    long_example = {"turns": [{"input_ids": [10, 11], "labels": [20, 21, 22, 23, 24]}]}
    short_example = {"turns": [{"input_ids": [10], "labels": [20]}]}
    with caplog.at_level(logging.INFO, logger="llmfoundry.data.finetuning"):
        for _ in range(64):
            collator([long_example, short_example])
        collator([short_example])  # batch 65: nothing new to report
    assert collator.stats is not None
    assert (collator.stats.examples, collator.stats.truncated) == (129, 64)
    records = [r for r in caplog.records if "finetuning examples" in r.getMessage()]
    # The first truncation warns; then a summary after batches 2, 4, 8, 16, 32 and 64.
    assert [r.levelno for r in records] == [logging.WARNING] + [logging.INFO] * 6
    assert (
        records[-1]
        .getMessage()
        .startswith(
            "MDS finetuning examples: 64 of 128 collated so far (64 batches) were longer than "
            "max_seq_len=6 and truncated"
        )
    )


def test_untracked_collator_keeps_no_stats() -> None:
    collator = Seq2SeqFinetuningCollator(PAD, 4)
    collator([{"turns": TURNS}])
    assert collator.stats is None
