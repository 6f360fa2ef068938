"""dataset_swap: resuming with a larger dataset_index reads the new dataset from its start in the
next epoch; the same index resumes where the checkpoint stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch
from composer import Trainer
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry.callbacks import DatasetSwap
from llmfoundry.utils.builders import build_callbacks_with_config, build_dataloader_from_section
from llmfoundry.utils.exceptions import ConfigError
from tests.callbacks.test_curriculum_learning import (  # the same two datasets and recorder
    BATCH,
    SEQ_LEN,
    InputRecorder,
    _source,
    _write_first_samples,
    datasets,  # noqa: F401  (module fixture)
)
from tests.fixtures import checkpoint_file, lm_trainer, tiny_lm_mpt


def _config(local: str, dataset_index: int) -> dict[str, Any]:
    return {
        "train_loader": {
            "name": "text",
            "dataset": {"local": local, "max_seq_len": SEQ_LEN, "shuffle": False},
            "drop_last": True,
            "num_workers": 0,
            "pin_memory": False,
        },
        "callbacks": {"dataset_swap": {"dataset_index": dataset_index}},
    }


def _fit(
    config: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    save_folder: Path,
    max_batches: int,
    load_path: Path | None = None,
) -> tuple[InputRecorder, DatasetSwap, Trainer]:
    (swap,) = build_callbacks_with_config(config["callbacks"], config)
    assert isinstance(swap, DatasetSwap)
    recorder = InputRecorder()
    loader = build_dataloader_from_section("train_loader", config["train_loader"], tokenizer, BATCH)
    trainer = lm_trainer(
        tiny_lm_mpt(vocab_size=512, max_seq_len=SEQ_LEN),
        cast(DataLoader, loader.dataloader),
        [swap, recorder],
        f"{max_batches}ba",
        save_folder=str(save_folder),
        save_interval="1ba",
        load_path=None if load_path is None else str(load_path),
    )
    trainer.fit()
    trainer.close()
    return recorder, swap, trainer


@pytest.mark.slow
def test_swap_starts_the_new_dataset_and_autoresume_continues_it(
    datasets: tuple[str, str],  # noqa: F811
    tokenizer: PreTrainedTokenizerBase,
    tmp_path: Path,
) -> None:
    local_a, local_b = datasets
    first, first_swap, _ = _fit(_config(local_a, 0), tokenizer, tmp_path / "a", 3)
    assert [_source(first.batches[b]) for b in (1, 2, 3)] == ["A", "A", "A"]
    assert first_swap.all_dataset_configs == [_config(local_a, 0)["train_loader"]]

    # Same index, same data: an ordinary resumption, batch 3 is A's third batch again.
    same, _, _ = _fit(
        _config(local_a, 0), tokenizer, tmp_path / "same", 3, checkpoint_file(tmp_path / "a", 2)
    )
    torch.testing.assert_close(same.batches[3], first.batches[3])

    # Index 1 on B: B's first samples, in the next epoch; the configs of both datasets recorded.
    swapped, swap, trainer = _fit(
        _config(local_b, 1), tokenizer, tmp_path / "b", 5, checkpoint_file(tmp_path / "a", 2)
    )
    assert sorted(swapped.batches) == [3, 4, 5]
    torch.testing.assert_close(swapped.batches[3], _write_first_samples(local_b))
    assert all(_source(ids) == "B" for ids in swapped.batches.values())
    assert int(trainer.state.timestamp.epoch) == 1
    assert swap.all_dataset_configs == [
        _config(local_a, 0)["train_loader"],
        _config(local_b, 1)["train_loader"],
    ]

    # Resuming the swapped run with index 1 continues in B where it stopped.
    resumed, _, _ = _fit(
        _config(local_b, 1), tokenizer, tmp_path / "b2", 5, tmp_path / "b" / "ep1-ba4-rank0.pt"
    )
    assert sorted(resumed.batches) == [5]
    torch.testing.assert_close(resumed.batches[5], swapped.batches[5])


def test_needs_a_train_loader_and_a_valid_index() -> None:
    with pytest.raises(ConfigError, match=r"^callbacks\.dataset_swap needs the run's train_loader"):
        build_callbacks_with_config({"dataset_swap": {"dataset_index": 1}}, {})
    with pytest.raises(
        ConfigError,
        match=r"^callbacks\.dataset_swap\.dataset_index must be a non-negative int, got int -1$",
    ):
        build_callbacks_with_config(
            {"dataset_swap": {"dataset_index": -1}}, {"train_loader": {"name": "text"}}
        )


def test_needs_a_streaming_dataset() -> None:
    rows = [{"input_ids": torch.arange(SEQ_LEN), "labels": torch.arange(SEQ_LEN)}] * 4
    swap = DatasetSwap({"train_loader": {"name": "custom"}}, dataset_index=1)
    with pytest.raises(
        ConfigError, match=r"^callbacks\.dataset_swap needs a train dataset that records"
    ):
        lm_trainer(tiny_lm_mpt(), DataLoader(cast(Any, rows), batch_size=2), [swap], "1ba")
