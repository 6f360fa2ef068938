"""LLM Foundry's ``context_key`` / ``answer_key`` / ``choices_key`` task keys: the row field a task
type reads in place of its usual one, for task data whose fields are named otherwise.

The keys taken, per task type (LLM Foundry 0.22 honours them for ``multiple_choice`` and
``schema``; for ``language_modeling`` and generation tasks it reads ``context`` / ``answer``
whatever the key says, and fails on data named otherwise, so there they are ours):

====================================  ==============================================
task type                             keys (the row field each one replaces)
====================================  ==============================================
``language_modeling``                 ``context_key`` (``context``)
``multiple_choice``                   ``context_key`` (``query``), ``choices_key`` (``choices``)
``schema``                            ``choices_key`` (``context_options``)
``generation_task_with_answers``      ``context_key`` (``context``), ``answer_key`` (``answer``)
====================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from llmfoundry.eval.sources import ICLRow
from llmfoundry.utils.exceptions import ConfigError, DatasetError

ROW_FIELD_OPTIONS = ("context_key", "answer_key", "choices_key")
ROW_FIELD_KEYS: dict[str, dict[str, str]] = {
    "language_modeling": {"context_key": "context"},
    "multiple_choice": {"context_key": "query", "choices_key": "choices"},
    "schema": {"choices_key": "context_options"},
    "generation_task_with_answers": {"context_key": "context", "answer_key": "answer"},
}


def check_row_field_keys(where: str, task_type: str, section: Mapping[str, Any]) -> None:
    """Refuse a ``*_key`` that ``task_type`` does not read, or one that is not a field name.

    Raises:
        ConfigError: naming ``<where>.<key>`` and the keys the task type takes.
    """
    takes = ROW_FIELD_KEYS.get(task_type, {})
    for key in ROW_FIELD_OPTIONS:
        value = section.get(key)
        if value is None:
            continue
        if key not in takes:
            allowed = f" (it takes {', '.join(takes)})" if takes else ""
            raise ConfigError(
                f"{where}.{key} does not apply to a {task_type} task{allowed}; remove it"
            )
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{key} must be the name of a row field, got {value!r}")


def renamed_rows(task_type: str, section: Mapping[str, Any], rows: list[ICLRow]) -> list[ICLRow]:
    """``rows`` with each field a ``*_key`` of ``section`` names copied to the field it stands
    for (``context_key: question`` makes ``question`` the ``context``).

    Raises:
        DatasetError: naming the file, row and field for a row without the named field.
    """
    renames = {
        usual: section[key]
        for key, usual in ROW_FIELD_KEYS.get(task_type, {}).items()
        if section.get(key) not in (None, usual)
    }
    if not renames:
        return rows
    renamed = []
    for row in rows:
        for usual, given in renames.items():
            if given not in row.fields:
                raise DatasetError(
                    f"{row.source}, row {row.line}: missing field '{given}' (the task's "
                    f"{usual} field); add it to the row or name another field"
                )
        moved = {usual: row.fields[given] for usual, given in renames.items()}
        renamed.append(replace(row, fields={**row.fields, **moved}))
    return renamed
