"""The sample ICL task files, the demo task list and the demo gauntlet agree with each other.

Every row of every file under ``scripts/eval/local_data`` has the fields of its task type
(LLM Foundry's row formats), ``tasks_demo.yaml`` points only at files that exist and fit the
declared task type, and every benchmark of ``eval_gauntlet_demo.yaml`` is a task label and shot
count that ``tasks_demo.yaml`` runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from llmfoundry.callbacks.eval_gauntlet_callback import load_gauntlet_config
from tests import REPO

DATA = REPO / "scripts" / "eval" / "local_data"
TASKS_YAML = REPO / "scripts" / "eval" / "yamls" / "tasks_demo.yaml"
GAUNTLET_YAML = REPO / "scripts" / "eval" / "yamls" / "eval_gauntlet_demo.yaml"

Row = dict[str, Any]


def _text(row: Row, key: str) -> str:
    value = row.get(key)
    assert isinstance(value, str) and value.strip(), f"{key!r} must be a non-empty string"
    return value


def _options(row: Row, key: str) -> list[str]:
    value = row.get(key)
    assert isinstance(value, list) and len(value) >= 2, f"{key!r} must list 2+ options"
    assert all(isinstance(v, str) and v.strip() for v in value), f"{key!r} has an empty option"
    assert len(set(value)) == len(value), f"{key!r} repeats an option"
    return value


def _gold(row: Row, n_options: int) -> None:
    gold = row.get("gold")
    assert isinstance(gold, int) and not isinstance(gold, bool), "'gold' must be an integer"
    assert 0 <= gold < n_options, f"'gold' {gold} is out of range for {n_options} options"


def check_language_modeling(row: Row) -> None:
    _text(row, "context")
    continuation = _text(row, "continuation")
    # The continuation is the sentence's last word, with its leading space.
    assert continuation.startswith(" ") and len(continuation.split()) == 1, continuation


def check_multiple_choice(row: Row) -> None:
    _text(row, "query")
    _gold(row, len(_options(row, "choices")))


def check_schema(row: Row) -> None:
    _gold(row, len(_options(row, "context_options")))
    assert _text(row, "continuation").startswith(" ")


def check_generation(row: Row) -> None:
    _text(row, "context")
    answer = _text(row, "answer")
    aliases = row.get("aliases")
    assert isinstance(aliases, list) and aliases, "'aliases' must be a non-empty list"
    assert all(isinstance(a, str) and a.strip() for a in aliases), "'aliases' has an empty entry"
    assert answer in aliases, "the answer must be one of its aliases"


CHECKS: dict[str, Callable[[Row], None]] = {
    "language_modeling": check_language_modeling,
    "multiple_choice": check_multiple_choice,
    "schema": check_schema,
    "generation_task_with_answers": check_generation,
}
# Each folder of local_data holds one task type.
FOLDER_TYPES = {
    "language_modeling": "language_modeling",
    "multiple_choice": "multiple_choice",
    "schema": "schema",
    "generation": "generation_task_with_answers",
}


def read_rows(path: Path) -> list[Row]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"{path.name}:{number} is blank"
        row = json.loads(line)
        assert isinstance(row, dict), f"{path.name}:{number} is not a JSON object"
        rows.append(row)
    return rows


def check_rows(path: Path, task_type: str) -> list[Row]:
    rows = read_rows(path)
    assert 20 <= len(rows) <= 40, f"{path.name} has {len(rows)} rows"
    for number, row in enumerate(rows, start=1):
        try:
            CHECKS[task_type](row)
        except AssertionError as err:
            raise AssertionError(f"{path.name}, row {number}: {err}") from err
    return rows


def load_tasks() -> list[dict[str, Any]]:
    loaded = OmegaConf.to_container(OmegaConf.load(TASKS_YAML), resolve=True)
    assert isinstance(loaded, dict) and isinstance(loaded.get("icl_tasks"), list)
    return loaded["icl_tasks"]


SAMPLE_FILES = sorted(DATA.glob("*/*.jsonl"))


def test_every_task_type_has_a_sample_file() -> None:
    assert {path.parent.name for path in SAMPLE_FILES} == set(FOLDER_TYPES)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_file_rows_have_their_task_fields(path: Path) -> None:
    check_rows(path, FOLDER_TYPES[path.parent.name])


def test_arc_easy_rows_have_four_choices_and_a_category() -> None:
    rows = read_rows(DATA / "multiple_choice" / "arc_easy_mini.jsonl")
    assert all(len(row["choices"]) == 4 for row in rows)
    categories = [row.get("category") for row in rows]
    assert all(isinstance(c, str) and c for c in categories)
    assert len(set(categories)) >= 2


def test_a_broken_row_is_caught(tmp_path: Path) -> None:
    # The checks above can fail: a gold index past the last choice is reported with its row.
    bad = tmp_path / "bad.jsonl"
    good = {"query": "q", "choices": ["a", "b"], "gold": 1}
    bad.write_text(
        "\n".join(json.dumps(good) for _ in range(20)) + '\n{"query": "q", '
        '"choices": ["a", "b"], "gold": 2}\n'
    )
    with pytest.raises(AssertionError, match=r"bad.jsonl, row 21: 'gold' 2 is out of range"):
        check_rows(bad, "multiple_choice")


def test_demo_tasks_point_at_matching_files() -> None:
    tasks = load_tasks()
    labels = [task["label"] for task in tasks]
    assert len(set(labels)) == len(labels), "task labels must be unique"
    used = set()
    for task in tasks:
        path = REPO / task["dataset_uri"]
        assert path.is_file(), f"{task['label']}: {task['dataset_uri']} does not exist"
        used.add(path)
        rows = check_rows(path, task["icl_task_type"])
        shots = task["num_fewshot"]
        assert isinstance(shots, list) and shots
        assert all(isinstance(k, int) and 0 <= k < len(rows) for k in shots), shots
        if task.get("has_categories"):
            assert all(row.get("category") for row in rows), task["label"]
    assert used == set(SAMPLE_FILES), "every sample file is used by a demo task"


def test_demo_gauntlet_benchmarks_are_demo_tasks() -> None:
    shots = {task["label"]: set(task["num_fewshot"]) for task in load_tasks()}
    config = load_gauntlet_config(GAUNTLET_YAML)
    benchmarks = [b for category in config.categories for b in category.benchmarks]
    assert benchmarks
    for bench in benchmarks:
        assert bench.name in shots, f"{bench.name} is not a task label of tasks_demo.yaml"
        assert bench.num_fewshot in shots[bench.name], f"{bench.label} is not run"
    assert {b.name for b in benchmarks} == set(shots), "every demo task is in the gauntlet"
