"""LLM Foundry's standard eval task lists (``scripts/eval/yamls``) build their evaluators, with
LLM Foundry's evaluator labels and metrics, from data of the right shape.

The benchmark files are not committed, so the tests write a few synthetic rows of each task's shape
to ``eval/local_data/...`` in a temporary working directory (where LLM Foundry's relative
``dataset_uri`` paths look first); the long-context tasks' Hugging Face loads are faked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.eval import build_icl_evaluators
from tests.eval.test_standard_yamls import (
    DEFAULT_METRIC,
    LOCAL_TASK_LISTS,
    LONG_CONTEXT,
    YAMLS,
    Section,
    _shots,
    _task_sections,
)

CATEGORIES = ("zoology", "astronomy")  # written unsorted: evaluators come in sorted order


# --------------------------------------------------------------------------- helpers


def _expected_evaluators(sections: list[Section]) -> list[tuple[str, str]]:
    """LLM Foundry's (evaluator label, metric) pairs, in its order: per task, per shot count, per
    category (sorted) for tasks with has_categories."""
    expected = []
    for section in sections:
        metric = DEFAULT_METRIC[section["icl_task_type"]]
        for k in _shots(section):
            if section.get("has_categories"):
                expected += [
                    (f"{section['label']}/{k}-shot/{c}", metric) for c in sorted(CATEGORIES)
                ]
            else:
                expected.append((f"{section['label']}/{k}-shot", metric))
    return expected


def _rows(section: Mapping[str, Any], count: int, category: str | None = None) -> list[Section]:
    """``count`` small synthetic rows of the shape the section's task type reads."""
    task_type = section["icl_task_type"]
    rows: list[Section] = []
    for i in range(count):
        if task_type == "language_modeling":
            row: Section = {"context": f"The number after {i} is", "continuation": f" {i + 1}"}
        elif task_type == "multiple_choice":
            row = {"query": f"Which is {i}?", "choices": [f"{i}", "x", "y", "z"], "gold": 0}
        elif task_type == "schema":
            row = {
                "context_options": [f"Anna paid {i}.", f"Ben paid {i}."],
                "continuation": " She was broke.",
                "gold": 0,
            }
        elif task_type == "generation_task_with_answers":
            row = {"context": f"What is {i} plus 1?", "answer": f"{i + 1}", "aliases": [f"{i + 1}"]}
            if section.get("cot_delimiter"):
                row["chain_of_thought"] = f"{i} and one more make {i + 1}."
        else:
            raise AssertionError(f"{section['label']}: no synthetic rows for type {task_type!r}")
        if category is not None:
            row["category"] = category
        rows.append(row)
    return rows


def _write_local_data(root: Path, sections: list[Section]) -> None:
    """Write every task's dataset_uri under ``root``, with enough rows for its largest shot count."""
    for section in sections:
        count = max(3, max(_shots(section)) + 2)
        categories = CATEGORIES if section.get("has_categories") else (None,)
        rows = [row for c in categories for row in _rows(section, count, c)]
        path = root / section["dataset_uri"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _check_evaluators(
    evaluators: list[Any], logger_keys: list[str], sections: list[Section], name: str
) -> None:
    expected = _expected_evaluators(sections)
    labels = [e.label for e in evaluators]
    wanted = [label for label, _ in expected]
    assert labels == wanted, (
        f"{name}: evaluator labels differ from LLM Foundry's.\n"
        f"  missing: {sorted(set(wanted) - set(labels))}\n"
        f"  unexpected: {sorted(set(labels) - set(wanted))}\n"
        f"  same labels in another order: {sorted(labels) == sorted(wanted)}"
    )
    for evaluator, (label, metric) in zip(evaluators, expected, strict=True):
        assert list(evaluator.metric_names) == [metric], (
            f"{name}: {label} scores {evaluator.metric_names}, LLM Foundry scores [{metric}]"
        )
    assert logger_keys == [f"metrics/{label}/{metric}" for label, metric in expected], (
        f"{name}: logger keys differ from LLM Foundry's metrics/{{label}}/{{metric}}"
    )
    for evaluator in evaluators:  # the synthetic rows go all the way into a batch
        batch = next(iter(evaluator.dataloader.dataloader))
        assert batch["input_ids"].shape[0] > 0, f"{name}: {evaluator.label} gave an empty batch"


# --------------------------------------------------------------------------- building


@pytest.mark.parametrize("name", LOCAL_TASK_LISTS)
def test_task_list_builds_its_evaluators(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    sections = _task_sections(name)
    _write_local_data(tmp_path, sections)
    monkeypatch.chdir(tmp_path)  # as LLM Foundry's users run from scripts/
    evaluators, logger_keys = build_icl_evaluators(
        str(YAMLS / name), tokenizer, default_max_seq_len=256, default_batch_size=4
    )
    _check_evaluators(evaluators, logger_keys, sections, name)


def test_long_context_tasks_build_from_the_hub(
    monkeypatch: pytest.MonkeyPatch, tokenizer: PreTrainedTokenizerBase
) -> None:
    import datasets

    sections = _task_sections(LONG_CONTEXT)
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_load_dataset(path: str, **kwargs: Any) -> datasets.Dataset:
        calls.append((path, kwargs))
        return datasets.Dataset.from_list(
            _rows({"icl_task_type": "generation_task_with_answers"}, 3)
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    evaluators, logger_keys = build_icl_evaluators(
        str(YAMLS / LONG_CONTEXT), tokenizer, default_max_seq_len=256, default_batch_size=4
    )
    _check_evaluators(evaluators, logger_keys, sections, LONG_CONTEXT)
    # Tasks with the same hf_loading_vars (wikiqa_2k/4k/8k) may share one load.
    assert {path for path, _ in calls} == {"mosaicml/long_context_eval"}
    loaded = {json.dumps(kwargs, sort_keys=True) for _, kwargs in calls}
    wanted = {json.dumps(s["hf_loading_vars"], sort_keys=True) for s in sections}
    assert loaded == wanted, (
        f"load_dataset kwargs differ from the tasks' hf_loading_vars: "
        f"missing {sorted(wanted - loaded)}, unexpected {sorted(loaded - wanted)}"
    )
