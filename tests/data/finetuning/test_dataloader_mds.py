"""The ``finetuning`` data loader on MDS: tokenized multi-turn ``turns``, truncation accounting,
streams, and ``eval_loader`` sections."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning import build_finetuning_dataloader
from llmfoundry.data.finetuning.collator import IGNORE_INDEX, Seq2SeqFinetuningCollator
from llmfoundry.utils.exceptions import ConfigError, DatasetError
from tests.data.conftest import collator_of
from tests.data.finetuning.loader_cases import (
    EOS,
    PAD,
    ROWS,
    X,
    json_dataset,
    write_mds,
)

# --- MDS `turns` column (tokenized multi-turn chats) ---

CHATS = [
    [{"input_ids": [5, 6], "labels": [7, 8]}, {"input_ids": [9], "labels": [10, EOS]}],
    [{"input_ids": [11], "labels": [12, EOS]}],
]


def test_mds_turns_column_reads_multi_turn_chats(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    write_mds(tmp_path / "mds", {"turns": "json"}, [{"turns": chat} for chat in CHATS])
    dataset = {
        "local": str(tmp_path / "mds"),
        "max_seq_len": 8,
        "shuffle": False,
        "target_responses": "all",
    }
    batch = next(iter(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader))
    assert batch["input_ids"].tolist() == [
        [5, 6, 7, 8, 9, 10, EOS, PAD],
        [11, 12, EOS] + [PAD] * 5,
    ]
    # Both responses of the chat are targets (target_responses: all), its prompts are not.
    assert batch["labels"].tolist() == [[X, X, 7, 8, X, 10, EOS, X], [X, 12, EOS] + [X] * 5]
    last_only = {**dataset, "target_responses": "last"}
    batch = next(iter(build_finetuning_dataloader(tokenizer, 2, last_only).dataloader))
    assert batch["labels"][0].tolist() == [X, X, X, X, X, 10, EOS, X]


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([], r"MDS sample 1: column 'turns' must be a non-empty list .* got an empty list"),
        ({"input_ids": [1]}, r"MDS sample 1: column 'turns' must be a non-empty list .* got dict"),
        (
            [{"input_ids": [5], "labels": [6]}, {"input_ids": [5], "response": [6]}],
            r"MDS sample 1: turn 1 of column 'turns' must be a dict with exactly 'input_ids' "
            r"and 'labels', got keys \['input_ids', 'response'\]",
        ),
        (
            [{"input_ids": [5, "x"], "labels": [6]}],
            r"MDS sample 1: turn 0 'input_ids' of column 'turns' must be a list of non-negative",
        ),
        (
            [{"input_ids": [5], "labels": [-1]}],
            r"MDS sample 1: turn 0 'labels' of column 'turns' must be a list of non-negative",
        ),
        (
            [{"input_ids": [5], "labels": []}],
            r"MDS sample 1: turn 0 of column 'turns' has empty 'labels'",
        ),
    ],
)
def test_malformed_turns_name_the_sample_and_the_problem(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, turns: Any, message: str
) -> None:
    write_mds(tmp_path / "mds", {"turns": "json"}, [{"turns": CHATS[1]}, {"turns": turns}])
    dataset = {"local": str(tmp_path / "mds"), "max_seq_len": 8, "shuffle": False}
    loader = build_finetuning_dataloader(tokenizer, 2, dataset).dataloader
    with pytest.raises(DatasetError, match=message) as error:
        next(iter(loader))
    assert "\n" not in str(error.value)


# --- MDS truncation accounting ---


def test_mds_truncation_and_untrainable_examples_are_counted_and_logged(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    def sample(prompt_len: int, response_len: int) -> dict[str, np.ndarray]:
        return {
            "input_ids": np.arange(10, 10 + prompt_len, dtype=np.int32),
            "labels": np.arange(100, 100 + response_len, dtype=np.int32),
        }

    samples = [
        sample(2, 2),  # fits
        sample(3, 9),  # 12 tokens: truncated to 8, keeps 5 response tokens
        sample(8, 2),  # the prompt fills max_seq_len: truncated, no target left
        sample(1, 3),  # fits
    ]
    write_mds(tmp_path / "mds", {"input_ids": "ndarray:int32", "labels": "ndarray:int32"}, samples)
    dataset = {
        "local": str(tmp_path / "mds"),
        "max_seq_len": 8,
        "shuffle": False,
        # No prompt here is 9 tokens long, so an example whose response is cut away has no
        # target left.
        "target_prompts": "length>=9",
    }
    spec = build_finetuning_dataloader(tokenizer, 2, dataset)
    with caplog.at_level(logging.INFO, logger="llmfoundry.data.finetuning"):
        batches = list(spec.dataloader)
    assert len(batches) == 2
    untrainable_row = batches[1]["labels"][0]
    assert batches[1]["input_ids"][0].tolist() == list(range(10, 18))
    assert untrainable_row.eq(IGNORE_INDEX).all()  # kept as a row, fully masked
    assert batches[0]["labels"][1].tolist() == [X, X, X, 100, 101, 102, 103, 104]
    # The fitting examples' responses end with the tokenizer's EOS, appended when read.
    assert batches[0]["labels"][0].tolist() == [X, X, 100, 101, EOS, X, X, X]
    collator = collator_of(spec, Seq2SeqFinetuningCollator)
    stats = collator.stats
    assert stats is not None
    assert (stats.examples, stats.truncated, stats.untrainable) == (4, 2, 1)
    messages = [r.getMessage() for r in caplog.records if "finetuning examples" in r.getMessage()]
    assert messages[0].startswith(
        "MDS finetuning examples: 1 of 2 collated so far (1 batches) were longer than "
        "max_seq_len=8 and truncated; 0 had no target token"
    )
    assert messages[-1].startswith("MDS finetuning examples: 2 of 4 collated so far (2 batches)")
    assert "1 had no target token" in messages[-1]
    assert len(messages) == 2


def test_hf_examples_are_not_counted_again_when_collated(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    spec = build_finetuning_dataloader(tokenizer, 2, json_dataset(tmp_path, ROWS))
    collator = collator_of(spec, Seq2SeqFinetuningCollator)
    assert collator.stats is None  # counted (and filtered) once, when the dataset was built


# --- streams, eval_loader ---


def id_samples(first_id: int, count: int) -> list[dict[str, np.ndarray]]:
    """Single-turn samples whose prompt is one id, ``first_id + i``, naming the sample."""
    return [
        {
            "input_ids": np.asarray([first_id + i], np.int32),
            "labels": np.asarray([7, EOS], np.int32),
        }
        for i in range(count)
    ]


def test_streams_mix_two_mds_folders_in_their_proportions(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    columns = {"input_ids": "ndarray:int32", "labels": "ndarray:int32"}
    write_mds(tmp_path / "a" / "train", columns, id_samples(100, 20))
    write_mds(tmp_path / "b" / "train", columns, id_samples(300, 20))
    dataset = {
        "max_seq_len": 8,
        "shuffle": True,
        "epoch_size": 40,
        "streams": {
            "a": {"local": str(tmp_path / "a"), "split": "train", "proportion": 0.75},
            "b": {"local": str(tmp_path / "b"), "split": "train", "proportion": 0.25},
        },
    }
    spec = build_finetuning_dataloader(tokenizer, 4, dataset, drop_last=False)
    first_ids = [int(i) for batch in spec.dataloader for i in batch["input_ids"][:, 0]]
    from_a = [i for i in first_ids if 100 <= i < 120]
    from_b = [i for i in first_ids if 300 <= i < 320]
    # floor(40 x 0.75) = 30 from a (its 20 samples, 10 of them twice), 10 from b (no repeats).
    assert (len(from_a), len(from_b)) == (30, 10)
    assert len(first_ids) == 40
    assert set(from_a) == set(range(100, 120))
    assert len(set(from_b)) == 10


def test_eval_loader_messages_name_eval_loader(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    with pytest.raises(ConfigError, match=r"^eval_loader\.dataset\.max_seq_length is not a valid"):
        build_finetuning_dataloader(
            tokenizer, 2, json_dataset(tmp_path, ROWS, max_seq_length=8), section="eval_loader"
        )
    with pytest.raises(ConfigError, match=r"^eval_loader\.dataset\.max_leftover_bins_to_keep "):
        build_finetuning_dataloader(
            tokenizer,
            2,
            json_dataset(tmp_path, ROWS, max_leftover_bins_to_keep=-1),
            section="eval_loader",
        )
    rows = [*ROWS[:2], {"prompt": "a", "response": ""}]
    with pytest.raises(DatasetError, match=r"row 2: field 'response' is empty"):
        build_finetuning_dataloader(
            tokenizer, 2, json_dataset(tmp_path, rows), section="eval_loader"
        )


@pytest.mark.parametrize("source", ["hf", "mds"])
def test_eval_loader_without_drop_last_keeps_the_last_partial_batch(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, source: str
) -> None:
    rows = ROWS[:5]
    if source == "hf":
        dataset = json_dataset(tmp_path, rows)
    else:
        write_mds(tmp_path / "mds", {"prompt": "str", "response": "str"}, rows)
        dataset = {"local": str(tmp_path / "mds"), "max_seq_len": 32, "shuffle": False}
    loader = build_finetuning_dataloader(
        tokenizer, 2, dataset, drop_last=False, section="eval_loader"
    ).dataloader
    sizes = [batch["input_ids"].shape[0] for batch in loader]
    assert sizes == [2, 2, 1]
    loader = build_finetuning_dataloader(tokenizer, 2, dataset, drop_last=True).dataloader
    assert [batch["input_ids"].shape[0] for batch in loader] == [2, 2]
