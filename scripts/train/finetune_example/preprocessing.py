"""The preprocessing function of the finetuning example: multiple-choice rows -> prompt/response.

Each row of ``train.jsonl`` is a science question in the shape of an ARC-Easy benchmark row::

    {"query": "Question: ...\\n", "choices": ["...", "...", ...], "gold": <index of the answer>}

Finetuning needs ``{"prompt": ..., "response": ...}`` pairs; :func:`multiple_choice` makes the
prompt the question followed by its options and ``Answer: ``, and the response the correct
choice. A YAML names the function in one of two ways:

* by import path, ``preprocessing_fn: finetune_example.preprocessing:multiple_choice``
  (``finetune_example`` must be importable: run from ``scripts/train``);
* by its registered name, ``preprocessing_fn: arc_easy_multiple_choice``, once this file is
  imported (``code_paths: [finetune_example/preprocessing.py]``, or the import path above).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmfoundry.data.finetuning import dataset_constructor

REGISTERED_NAME = "arc_easy_multiple_choice"


def multiple_choice(row: Mapping[str, Any]) -> dict[str, str]:
    """``{prompt, response}`` for a ``{query, choices, gold}`` row."""
    options = "".join(f"\n - {choice}" for choice in row["choices"])
    return {
        "prompt": f"{row['query']}\nOptions:{options}\nAnswer: ",
        "response": row["choices"][row["gold"]],
    }


# The file may be imported under two module names (its import path and code_paths); register once.
if dataset_constructor.get(REGISTERED_NAME) is None:
    dataset_constructor.register(REGISTERED_NAME)(multiple_choice)
