"""Bad ICL task files: each fails in one line naming the file, the row and the field (or the
task key) and the fix, for every task type, both where the evaluators are built and through
the eval command (exit code 2, no traceback, no results folder)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.cli.commands.eval import main as eval_main
from llmfoundry.eval import build_icl_evaluators
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError

from .cli_case import assert_one_line_error, assert_one_line_message, files_under, run_cli

GOOD_ROWS: dict[str, dict[str, Any]] = {
    "language_modeling": {"context": "The list is", "continuation": " sorted"},
    "multiple_choice": {"query": "Heaps pop the", "choices": [" smallest", " largest"], "gold": 0},
    "schema": {"context_options": ["A heap", "A list"], "continuation": " pops", "gold": 0},
    "generation_task_with_answers": {"context": "Q: a keyword?", "answer": "def"},
}


def _without(row: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != key}


# (case, task type, the field the third row lacks): the one line says "missing field '<field>'".
MISSING_FIELDS = [
    ("mc: no choices", "multiple_choice", "choices"),
    ("mc: no gold", "multiple_choice", "gold"),
    ("schema: no context_options", "schema", "context_options"),
    ("schema: no continuation", "schema", "continuation"),
    ("generation: no answer", "generation_task_with_answers", "answer"),
    ("generation: no context", "generation_task_with_answers", "context"),
]
# (task type, the third row, what the one line says)
ROW_CASES: dict[str, tuple[str, dict[str, Any] | str, str]] = {
    "lm: no continuation": (
        "language_modeling",
        _without(GOOD_ROWS["language_modeling"], "continuation"),
        "missing field 'continuation'; add it",
    ),
    "lm: number as context": (
        "language_modeling",
        {"context": 7, "continuation": " x"},
        "field 'context': expected str, got int",
    ),
    **{
        case: (task_type, _without(GOOD_ROWS[task_type], field), f"missing field '{field}'")
        for case, task_type, field in MISSING_FIELDS
    },
    "mc: gold out of range": (
        "multiple_choice",
        {**GOOD_ROWS["multiple_choice"], "gold": 5},
        "gold=5 is out of range for 2 choices (0..1); set it",
    ),
    "mc: empty choices": (
        "multiple_choice",
        {**GOOD_ROWS["multiple_choice"], "choices": []},
        "field 'choices': the list is empty",
    ),
    "malformed JSON row": ("multiple_choice", '{"query": "cut', "not valid JSON"),
    "row not an object": ("language_modeling", '["a", "b"]', "expected a JSON object, got list"),
}


def _task_file(folder: Path, task_type: str, third_row: Mapping[str, Any] | str | None) -> Path:
    """Two good rows of ``task_type``, then ``third_row`` (a mapping, or a raw line)."""
    lines = [json.dumps(GOOD_ROWS[task_type])] * 2
    if third_row is not None:
        lines.append(third_row if isinstance(third_row, str) else json.dumps(third_row))
    path = folder / f"{task_type}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _build(
    tokenizer: PreTrainedTokenizerBase, path: Path | str, task_type: str, num_fewshot: int = 0
) -> None:
    task = {
        "label": "task",
        "dataset_uri": str(path),
        "icl_task_type": task_type,
        "num_fewshot": [num_fewshot],
    }
    build_icl_evaluators([task], tokenizer, 64, 4)


@pytest.mark.parametrize("case", list(ROW_CASES))
def test_bad_row_is_named(case: str, tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    task_type, row, says = ROW_CASES[case]
    path = _task_file(tmp_path, task_type, row)
    with pytest.raises(DatasetError) as caught:
        _build(tokenizer, path, task_type)
    assert_one_line_message(caught.value, f"{path}, row 3", says)


def test_non_utf8_row_is_named(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    path = _task_file(tmp_path, "language_modeling", None)
    path.write_bytes(path.read_bytes() + b'{"context": "caf\xe9", "continuation": " x"}\n')
    with pytest.raises(DatasetError) as caught:
        _build(tokenizer, path, "language_modeling")
    assert_one_line_message(caught.value, f"{path}, row 3", "not valid UTF-8", "re-encode")


def test_empty_file(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DatasetError) as caught:
        _build(tokenizer, path, "language_modeling")
    assert_one_line_message(caught.value, str(path), "has no rows")


MISSING_FIX = "point dataset_uri at a JSONL file"  # (cli_case.HINT has no "point ... at")


def test_missing_file(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(MissingFileError) as caught:
        _build(tokenizer, tmp_path / "absent.jsonl", "language_modeling")
    message = str(caught.value)
    assert "\n" not in message
    assert f"'{tmp_path / 'absent.jsonl'}' does not exist; {MISSING_FIX}" in message


def test_bad_task_type(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    path = _task_file(tmp_path, "multiple_choice", None)
    with pytest.raises(ConfigError) as caught:
        _build(tokenizer, path, "multiple_choise")
    assert_one_line_message(
        caught.value, "icl_task_type 'multiple_choise'", "did you mean 'multiple_choice'"
    )


def test_num_fewshot_larger_than_the_dataset_warns_with_the_fix(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    """As in LLM Foundry, each prompt then gets every other row; the warning says so, once."""
    path = _task_file(tmp_path, "multiple_choice", GOOD_ROWS["multiple_choice"])
    with caplog.at_level(logging.WARNING, logger="llmfoundry.eval.datasets"):
        _build(tokenizer, path, "multiple_choice", num_fewshot=10)
    [warning] = [r.getMessage() for r in caplog.records if "num_fewshot" in r.getMessage()]
    assert warning == (
        f"{path}: num_fewshot=10 but the task has 3 rows; each prompt gets the 2 other rows "
        "(lower num_fewshot, or add rows)"
    )


# --- through the eval command ----------------------------------------------------------------

EVAL_YAML = """max_seq_len: 64
device_eval_batch_size: 4
precision: fp32
run_name: bad-icl
results_folder: {results}
model:
  name: mpt_causal_lm
  d_model: 16
  n_heads: 2
  n_layers: 1
  expansion_ratio: 2
  max_seq_len: 64
  vocab_size: 512
  attn_config: {{attn_impl: torch}}
tokenizer:
  name: {tokenizer}
icl_tasks:
- {{label: task, dataset_uri: {uri}, icl_task_type: {task_type}, num_fewshot: [0]}}
"""

EVAL_CASES: dict[str, tuple[str, dict[str, Any] | str | None, Sequence[str]]] = {
    "missing file": ("language_modeling", None, ("does not exist", MISSING_FIX)),
    "malformed row": ("multiple_choice", '{"query": ', ("row 3", "not valid JSON")),
    "missing field": (
        "schema",
        _without(GOOD_ROWS["schema"], "gold"),
        ("row 3", "missing field 'gold'"),
    ),
}


@pytest.mark.parametrize("case", list(EVAL_CASES))
def test_eval_command_reports_the_row(case: str, tmp_path: Path, tokenizer_dir: Path) -> None:
    task_type, row, says = EVAL_CASES[case]
    uri = tmp_path / "absent.jsonl" if row is None else _task_file(tmp_path, task_type, row)
    yaml = tmp_path / "eval.yaml"
    results = tmp_path / "results"
    yaml.write_text(
        EVAL_YAML.format(results=results, tokenizer=tokenizer_dir, uri=uri, task_type=task_type)
    )
    result = run_cli(eval_main, [str(yaml)])
    assert result.code == 2
    if row is not None:
        assert_one_line_error(result, str(uri), *says)
    else:  # the same checks but the hint's wording (see MISSING_FIX)
        assert "Traceback" not in result.err
        [line] = result.error_lines
        assert line == result.err.strip().splitlines()[-1]
        assert all(text in line for text in (str(uri), *says))
    assert files_under(results) == set()
