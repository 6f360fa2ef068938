"""eval_output_logging on ICL tasks: one row per example with its context, the metric's
per-example result and details, and (generation) the generated text, as LLM Foundry logs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.callbacks.eval_output_logging import EvalOutputLogging
from llmfoundry.eval import build_icl_evaluators
from llmfoundry.eval.metrics import normalize_answer
from tests.eval.helpers import write_jsonl
from tests.fixtures import TableRecorder, cpu_trainer, tiny_text_mpt

MC_ROWS = [
    {"query": "One plus one is", "choices": [" two", " three", " ten"], "gold": 0},
    {"query": "The sky is", "choices": [" green", " blue"], "gold": 1},
    {"query": "Water is", "choices": [" wet", " dry"], "gold": 0},
]
QA_ROWS = [
    {"context": "Capital of France?", "answer": "Paris", "aliases": ["paris fr"]},
    {"context": "Capital of Italy?", "answer": "Rome"},
]


def evaluate(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, task: dict[str, Any], rows: list[Any]
) -> tuple[dict[str, list[Any]], float]:
    """Evaluate a tiny MPT on one task with eval_output_logging; the logged table by column
    and the metric's value."""
    data = write_jsonl(tmp_path / f"{task['label']}.jsonl", rows)
    evaluators, keys = build_icl_evaluators(
        [{**task, "dataset_uri": data, "num_fewshot": [0]}], tokenizer, 64, 8
    )
    recorder = TableRecorder()
    trainer = cpu_trainer(
        tiny_text_mpt(tokenizer), callbacks=[EvalOutputLogging()], loggers=[recorder]
    )
    trainer.eval(eval_dataloader=evaluators)
    label, metric = keys[0].removeprefix("metrics/").rsplit("/", 1)
    value = float(trainer.state.eval_metrics[label][metric].compute())
    trainer.close()
    ((name, _, columns, table),) = recorder.tables
    assert name == f"eval_outputs/ba0/{task['label']}/0-shot"
    return {column: [row[i] for row in table] for i, column in enumerate(columns)}, value


def test_multiple_choice_rows_are_questions_with_their_choices(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    task = {"label": "mc", "icl_task_type": "multiple_choice", "continuation_delimiter": ""}
    table, accuracy = evaluate(tmp_path, tokenizer, task, MC_ROWS)
    assert list(table) == [
        "input",
        "context",
        "correct_choice",
        "correct_choice_idx",
        "selected_choice",
        "selected_choice_idx",
        "all_choices",
        "result",
        "metric_name",
        "run_name",
    ]
    assert table["input"] == table["context"] == [row["query"] for row in MC_ROWS]
    assert table["all_choices"] == [row["choices"] for row in MC_ROWS]
    assert table["correct_choice_idx"] == [row["gold"] for row in MC_ROWS]
    assert table["correct_choice"] == [row["choices"][row["gold"]] for row in MC_ROWS]
    for row, selected, chosen, result in zip(
        MC_ROWS,
        table["selected_choice_idx"],
        table["selected_choice"],
        table["result"],
        strict=True,
    ):
        assert chosen == row["choices"][selected]
        assert result == int(selected == row["gold"])
    assert sum(table["result"]) / len(MC_ROWS) == pytest.approx(accuracy)
    assert set(table["metric_name"]) == {"InContextLearningMultipleChoiceAccuracy"}


def test_generation_rows_hold_the_generated_text_and_answers(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    task = {"label": "qa", "icl_task_type": "generation_task_with_answers"}
    table, accuracy = evaluate(tmp_path, tokenizer, task, QA_ROWS)
    assert table["input"] == [row["context"] for row in QA_ROWS]
    assert table["original_label"] == [["Paris", "paris fr"], ["Rome"]]
    assert table["cleaned_label"] == [["paris", "paris fr"], ["rome"]]
    assert all(isinstance(text, str) for text in table["outputs"])
    # what the exact-match metric compared: the generation, normalized (no stop strings set)
    assert table["cleaned_output"] == [normalize_answer(text) for text in table["outputs"]]
    assert table["result"] == [0, 0] and accuracy == 0.0  # an untrained model
    assert len(set(table["run_name"])) == 1


def test_language_modeling_rows_hold_the_continuation_and_the_argmax(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    rows = [{"context": "The capital of France is", "continuation": " Paris"}]
    rows.append({"context": "Two and two make", "continuation": " four"})
    task = {"label": "lm", "icl_task_type": "language_modeling"}
    table, accuracy = evaluate(tmp_path, tokenizer, task, rows)
    assert list(table)[:5] == ["input", "context", "label", "output", "result"]
    assert table["context"] == [row["context"] for row in rows]
    assert table["label"] == [row["continuation"] for row in rows]
    assert table["result"] == [
        int(o == lab) for o, lab in zip(table["output"], table["label"], strict=True)
    ]
    assert sum(table["result"]) / len(rows) == pytest.approx(accuracy)
