"""LLM Foundry's ``context_key`` / ``answer_key`` / ``choices_key``: data whose fields are named
otherwise gives the same batches as the same data under the usual names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry.utils.exceptions import ConfigError, DatasetError
from tests.eval.helpers import MC_ROWS, icl_evaluators, icl_loader, write_jsonl

LM_ROWS = [
    {"context": "import json\njson.", "continuation": "dumps"},
    {"context": "import os\nos.", "continuation": "path"},
]
QA_ROWS = [
    {"context": "Which module reads JSON?", "answer": "json", "aliases": ["json"]},
    {"context": "Which module walks paths?", "answer": "os", "aliases": ["os"]},
]
SCHEMA_ROWS = [
    {"context_options": ["import json;", "import os;"], "continuation": " x = 1", "gold": 0},
]


def _renamed(rows: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    return [{names.get(k, k): v for k, v in row.items()} for row in rows]


def _batches(tokenizer: PreTrainedTokenizerBase, task: dict[str, Any]) -> list[dict[str, Any]]:
    (evaluator,) = icl_evaluators([task], tokenizer)
    return list(icl_loader(evaluator))


def _same(left: Any, right: Any) -> None:
    """Equal batches: tensors element for element, containers item by item."""
    assert type(left) is type(right)
    if isinstance(left, torch.Tensor):
        assert torch.equal(left, right)
    elif isinstance(left, dict):
        assert left.keys() == right.keys()
        for key in left:
            _same(left[key], right[key])
    elif isinstance(left, list | tuple):
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            _same(a, b)
    else:
        assert left == right


@pytest.mark.parametrize(
    ("task_type", "rows", "keys"),
    [
        ("language_modeling", LM_ROWS, {"context_key": ("context", "text")}),
        (
            "multiple_choice",
            MC_ROWS,
            {"context_key": ("query", "question"), "choices_key": ("choices", "options")},
        ),
        ("schema", SCHEMA_ROWS, {"choices_key": ("context_options", "openings")}),
        (
            "generation_task_with_answers",
            QA_ROWS,
            {"context_key": ("context", "question"), "answer_key": ("answer", "target")},
        ),
    ],
)
def test_renamed_fields_give_the_same_batches(
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    task_type: str,
    rows: list[dict[str, Any]],
    keys: dict[str, tuple[str, str]],
) -> None:
    usual = write_jsonl(tmp_path / "usual.jsonl", rows)
    names = dict(keys.values())
    other = write_jsonl(tmp_path / "other.jsonl", _renamed(rows, names))
    task = {"label": "t", "icl_task_type": task_type, "num_fewshot": [1]}
    expected = _batches(tokenizer, {**task, "dataset_uri": usual})
    given = {key: name for key, (_, name) in keys.items()}
    _same(_batches(tokenizer, {**task, "dataset_uri": other, **given}), expected)


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        (
            {"answer_key": "target"},
            ConfigError,
            r"icl_tasks\[0\]\.answer_key does not apply to a language_modeling task "
            r"\(it takes context_key\); remove it",
        ),
        ({"context_key": ["text"]}, ConfigError, r"icl_tasks\[0\]\.context_key must be the name"),
        (
            {"context_key": "text"},
            DatasetError,
            r"lm\.jsonl, row 1: missing field 'text' \(the task's context field\)",
        ),
    ],
    ids=["not-read-by-the-type", "not-a-name", "row-without-the-field"],
)
def test_bad_row_field_keys_fail_naming_the_key_or_row(
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    extra: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    uri = write_jsonl(tmp_path / "lm.jsonl", LM_ROWS)
    task = {"label": "t", "icl_task_type": "language_modeling", "dataset_uri": uri, **extra}
    with pytest.raises(error, match=message):
        icl_evaluators([task], tokenizer)
