"""curriculum_learning: phase 2 trains on the second dataset, resumes in the right phase, bad schedules fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from composer import Trainer
from composer.core import Callback
from streaming import MDSWriter
from streaming.base.util import clean_stale_shared_memory
from transformers import PreTrainedTokenizerBase

from llmfoundry.callbacks.curriculum_learning import CurriculumLearning
from llmfoundry.utils.builders import (
    build_callbacks,
    build_callbacks_with_config,
    build_dataloader_from_section,
)
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import cpu_trainer, tiny_lm_mpt

SEQ_LEN = 16
BATCH = 2
TOKENS_PER_BATCH = SEQ_LEN * BATCH
# Dataset A holds token ids 2..99, dataset B 300..399: a batch tells where it came from.
A_IDS, B_IDS = range(2, 100), range(300, 400)


def _write_tokens(folder: Path, ids: range, n_samples: int, offset: int) -> str:
    rng = np.random.default_rng(offset)
    with MDSWriter(out=str(folder), columns={"tokens": "ndarray:int32"}) as writer:
        for _ in range(n_samples):
            writer.write({"tokens": rng.integers(ids.start, ids.stop, SEQ_LEN).astype(np.int32)})
    return str(folder)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    clean_stale_shared_memory()
    root = tmp_path_factory.mktemp("curriculum")
    return _write_tokens(root / "a", A_IDS, 24, 0), _write_tokens(root / "b", B_IDS, 24, 1)


def _run_config(local_a: str, first: str, schedule: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "max_duration": "192tok",
        "train_loader": {
            "name": "text",
            "dataset": {"local": local_a, "max_seq_len": SEQ_LEN, "shuffle": False},
            "drop_last": True,
            "num_workers": 0,
            "pin_memory": False,
        },
        "callbacks": {"curriculum_learning": {"duration": first, "schedule": schedule}},
    }


class InputRecorder(Callback):
    """The input ids of every trained batch, by batch number."""

    def __init__(self) -> None:
        self.batches: dict[int, torch.Tensor] = {}

    def batch_end(self, state: Any, logger: Any) -> None:
        del logger
        self.batches[int(state.timestamp.batch)] = state.batch["input_ids"].clone()


def _source(ids: torch.Tensor) -> str:
    if bool(((ids >= A_IDS.start) & (ids < A_IDS.stop)).all()):
        return "A"
    if bool(((ids >= B_IDS.start) & (ids < B_IDS.stop)).all()):
        return "B"
    return "mixed"


def _trainer(
    config: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    recorder: InputRecorder,
    save_folder: Path,
    load_path: str | None = None,
) -> Trainer:
    model = tiny_lm_mpt(tokenizer=tokenizer, vocab_size=512, max_seq_len=SEQ_LEN)
    callbacks = [
        *build_callbacks(config["callbacks"]),
        *build_callbacks_with_config(config["callbacks"], config),
        recorder,
    ]
    return cpu_trainer(
        model,
        train_dataloader=build_dataloader_from_section(
            "train_loader", config["train_loader"], tokenizer, BATCH
        ),
        max_duration=config["max_duration"],
        optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
        callbacks=callbacks,
        save_folder=str(save_folder),
        save_interval="1ba",
        load_path=load_path,
        seed=3,
    )


def test_second_phase_trains_on_second_dataset_and_resumes_there(
    datasets: tuple[str, str], tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    local_a, local_b = datasets
    # phase 0: 2 batches of A; phase 1: 4 batches of B
    config = _run_config(
        local_a,
        f"{2 * TOKENS_PER_BATCH}tok",
        [{"duration": f"{4 * TOKENS_PER_BATCH}tok", "dataset": {"local": local_b}}],
    )
    recorder = InputRecorder()
    trainer = _trainer(config, tokenizer, recorder, tmp_path / "ck")
    (curriculum,) = [cb for cb in trainer.state.callbacks if isinstance(cb, CurriculumLearning)]
    trainer.fit()
    trainer.close()
    assert [_source(recorder.batches[b]) for b in range(1, 7)] == ["A", "A", "B", "B", "B", "B"]
    assert curriculum.phase_index == 2
    # B is read from its start: its first batch is B's first two samples
    first_b = _write_first_samples(local_b)
    torch.testing.assert_close(recorder.batches[3], first_b)

    # Resume mid-phase 1 (after batch 4) and at the phase boundary (after batch 2: saved before
    # Composer closed the iteration): the same B batches follow in both cases.
    for saved_at in (4, 2):
        resumed = InputRecorder()
        trainer = _trainer(
            config,
            tokenizer,
            resumed,
            tmp_path / f"resumed{saved_at}",
            load_path=str(tmp_path / "ck" / f"ep0-ba{saved_at}-rank0.pt"),
        )
        trainer.fit()
        trainer.close()
        assert sorted(resumed.batches) == list(range(saved_at + 1, 7))
        for batch, ids in resumed.batches.items():
            torch.testing.assert_close(
                ids, recorder.batches[batch], msg=f"batch {batch} after resuming at {saved_at}"
            )


def _write_first_samples(local: str) -> torch.Tensor:
    from llmfoundry.data.text_data import StreamingTextDataset

    dataset = StreamingTextDataset(tokenizer=None, max_seq_len=SEQ_LEN, local=local)
    return torch.stack([dataset[0], dataset[1]])


@pytest.mark.parametrize(
    ("first", "schedule", "message"),
    [
        ("64tok", [], r"^callbacks\.curriculum_learning\.schedule must be a non-empty list"),
        (
            "64tok",
            [{"duration": "0tok", "dataset": {}}],
            r"^callbacks\.curriculum_learning\.schedule\[0\]\.duration='0tok' must be positive$",
        ),
        (
            "64tok",
            [{"duration": "10ba", "dataset": {}}],
            r"^callbacks\.curriculum_learning\.schedule\[0\]\.duration='10ba': phases are measured in tokens or epochs",
        ),
        (
            "64tok",
            [{"duration": "1ep", "dataset": {}}],
            r"^callbacks\.curriculum_learning\.schedule\[0\]\.duration=1ep is in ep but callbacks\.curriculum_learning\.duration is in tok",
        ),
        (
            "soon",
            [{"duration": "1tok", "dataset": {}}],
            r"^callbacks\.curriculum_learning\.duration='soon' is not a duration",
        ),
        (
            "64tok",
            [{"duration": "64tok", "datset": {}}],
            r"^callbacks\.curriculum_learning\.schedule\[0\]\.datset is not a valid key; did you mean 'dataset'\?",
        ),
        (
            "64tok",
            [{"dataset": {}}],
            r"^callbacks\.curriculum_learning\.schedule\[0\]\.duration is missing",
        ),
        (
            "64tok",
            [{"duration": "64tok", "train_loader": {"num_wrkers": 1}}],
            r"^callbacks\.curriculum_learning\.schedule\[0\]\.train_loader\.num_wrkers is not a valid key; did you mean 'num_workers'\?",
        ),
    ],
)
def test_invalid_schedule_fails_naming_the_key(
    first: str, schedule: list[dict[str, Any]], message: str
) -> None:
    config = _run_config("/nowhere", first, schedule)
    with pytest.raises(ConfigError, match=message) as err:
        build_callbacks_with_config(config["callbacks"], config)
    assert "\n" not in str(err.value)


def test_durations_must_add_up_to_max_duration(
    datasets: tuple[str, str], tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    local_a, local_b = datasets
    config = _run_config(local_a, "64tok", [{"duration": "64tok", "dataset": {"local": local_b}}])
    with pytest.raises(
        ConfigError,
        match=r"^callbacks\.curriculum_learning: the phase durations add up to 128tok but max_duration is 192tok",
    ):
        _trainer(config, tokenizer, InputRecorder(), tmp_path)


def test_the_config_argument_is_not_a_yaml_key() -> None:
    config = _run_config("/nowhere", "64tok", [{"duration": "64tok", "dataset": {}}])
    config["callbacks"]["curriculum_learning"]["train_config"] = {}
    with pytest.raises(
        ConfigError, match=r"callbacks\.curriculum_learning\.train_config is not a valid key"
    ):
        build_callbacks_with_config(config["callbacks"], config)
