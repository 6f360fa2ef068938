"""loss_perp_v_len logs per-position loss/perplexity tables equal to a hand computation."""

from __future__ import annotations

import json
import math
from typing import Any, cast

import pytest
import torch
from composer.core import Callback, State
from composer.loggers import InMemoryLogger, Logger

from llmfoundry.callbacks.loss_perp_v_len import positions_in_sequence
from llmfoundry.models.mpt.modeling_mpt import MPTCausalLMOutput
from llmfoundry.utils.builders import build_callbacks
from llmfoundry.utils.exceptions import ConfigError
from tests.callbacks.scripted import ScriptedLossModel, scripted_trainer
from tests.fixtures import BATCH, SEQ_LEN, lm_trainer, tiny_lm_mpt, token_loader

N_BATCHES = 3
ROW_NAMES = (
    "mean_loss_v_len",
    "mean_perplexity_v_len",
    "sum_length",
    "mean_loss_seq_id_v_len",
    "mean_perplexity_seq_id_v_len",
    "sum_length_seq_id",
)


class OutputRecorder(Callback):
    """The logits (or fused per-token losses) and labels of every training batch."""

    def __init__(self) -> None:
        self.batches: list[dict[str, torch.Tensor]] = []

    def after_backward(self, state: State, logger: Logger) -> None:
        del logger
        outputs = cast(MPTCausalLMOutput, state.outputs)
        recorded = {"labels": state.batch["labels"].clone()}
        if outputs.logits is not None:
            recorded["logits"] = outputs.logits.detach().float().clone()
        else:
            assert outputs.token_losses is not None
            recorded["token_losses"] = outputs.token_losses.detach().clone()
        self.batches.append(recorded)


def _columns() -> dict[str, torch.Tensor]:
    """Labels with ignored tokens and packed documents (``sequence_id``, -1 = padding)."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 64, (N_BATCHES * BATCH, SEQ_LEN), generator=generator)
    labels = ids.clone()
    labels[0, 2] = labels[3, 5] = labels[4, 1] = -100
    sequence_id = torch.tensor(
        [
            [0, 0, 0, 1, 1, 1, 1, 1],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 2, 2, 2, -1, -1],
            [0, 0, 0, 0, 1, 1, 1, -1],
            [0, 0, 1, 1, 1, 1, 1, 1],
            [0, 0, 0, 0, 0, 1, 2, 2],
        ]
    )
    return {"input_ids": ids, "labels": labels, "sequence_id": sequence_id}


def _hand_rows(
    recorded: dict[str, torch.Tensor], sequence_id: torch.Tensor
) -> dict[str, list[float]]:
    """The six rows of one batch, token by token."""
    window: dict[int, list[float]] = {p: [] for p in range(SEQ_LEN)}
    in_document: dict[int, list[float]] = {p: [] for p in range(SEQ_LEN)}
    labels = recorded["labels"]
    for b in range(labels.shape[0]):
        start = 0
        for p in range(SEQ_LEN):
            if p > 0 and sequence_id[b, p] != sequence_id[b, p - 1]:
                start = p
            target = int(labels[b, p + 1]) if p + 1 < SEQ_LEN else -100
            if target == -100:
                continue
            if "logits" in recorded:
                loss = -float(torch.log_softmax(recorded["logits"][b, p].double(), -1)[target])
            else:
                loss = float(recorded["token_losses"][b, p])
            window[p].append(loss)
            if sequence_id[b, p] != -1:
                in_document[p - start].append(loss)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else -1.0

    rows: dict[str, list[float]] = {}
    for suffix, by_position in (("v_len", window), ("seq_id_v_len", in_document)):
        positions = [by_position[p] for p in range(SEQ_LEN)]
        rows[f"mean_loss_{suffix}"] = [mean(v) for v in positions]
        rows[f"mean_perplexity_{suffix}"] = [mean([math.exp(x) for x in v]) for v in positions]
        count_name = "sum_length" if suffix == "v_len" else "sum_length_seq_id"
        rows[count_name] = [float(len(v)) for v in positions]
    return rows


def _table(logged: InMemoryLogger, name: str) -> tuple[list[str], list[list[float]]]:
    table = json.loads(logged.tables[f"metrics/train/LossPerpVLenTable/{name}"])
    return table["columns"], table["data"]


@pytest.mark.parametrize("loss_fn", ["torch_crossentropy", "fused_crossentropy"])
def test_tables_equal_a_hand_computation(loss_fn: str) -> None:
    columns = _columns()
    recorder = OutputRecorder()
    logged = InMemoryLogger()
    callbacks = build_callbacks(
        {"loss_perp_v_len": {"log_batch_interval": 2, "compute_batch_interval": 1}}
    )
    trainer = lm_trainer(
        tiny_lm_mpt(loss_fn=loss_fn),
        token_loader(N_BATCHES, columns=columns),
        [recorder, *callbacks],
        f"{N_BATCHES}ba",
        loggers=[logged],
    )
    trainer.fit()
    trainer.close()
    # Logged at batches 0 and 2 (counting from 0); the last table holds the rows of batches 1, 2.
    for name in ROW_NAMES:
        header, rows = _table(logged, name)
        assert header == [*(f"context_length_{i}" for i in range(SEQ_LEN)), "batch_index"]
        assert [row[-1] for row in rows] == [1, 2]
        for row, batch in zip(rows, (1, 2), strict=True):
            rows_by_hand = _hand_rows(
                recorder.batches[batch], columns["sequence_id"][batch * BATCH : (batch + 1) * BATCH]
            )
            assert row[:-1] == pytest.approx(rows_by_hand[name], rel=1e-5), (name, batch)


def test_positions_restart_at_each_document() -> None:
    sequence_id = torch.tensor([[0, 0, 1, 1, 1, 2], [-1, -1, 0, 0, 3, 3]])
    assert positions_in_sequence(sequence_id).tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 0, 1, 0, 1]]


def test_intervals_are_checked() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^callbacks\.loss_perp_v_len\.compute_batch_interval=5 is larger than "
        r"log_batch_interval=2",
    ):
        build_callbacks({"loss_perp_v_len": {"log_batch_interval": 2, "compute_batch_interval": 5}})


def test_needs_a_causal_lm() -> None:
    callbacks: list[Any] = build_callbacks(
        {"loss_perp_v_len": {"log_batch_interval": 1, "compute_batch_interval": 1}}
    )
    with pytest.raises(
        ConfigError,
        match=r"^callbacks\.loss_perp_v_len needs a causal LM model .*got ScriptedLossModel$",
    ):
        scripted_trainer(ScriptedLossModel(), callbacks)
