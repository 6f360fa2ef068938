"""Rows, JSONL and MDS writers and the ``dataset:`` section shared by the finetuning loader tests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streaming import MDSWriter
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning.collator import IGNORE_INDEX

EOS, PAD = 0, 1
X = IGNORE_INDEX
ROWS = [
    {"prompt": "def loads(s):", "response": " return decode(s)"},
    {"prompt": "import json", "response": "\nimport re"},
    {"prompt": "class Encoder:", "response": "\n    pass"},
    {"prompt": "x = [", "response": "1, 2, 3]"},
    {"prompt": "while True:", "response": "\n    break"},
    {"prompt": "if not s:", "response": "\n    return None"},
]
# A two-turn conversation (a ``messages`` row).
CHAT = {
    "messages": [
        {"role": "user", "content": "def f(x):"},
        {"role": "assistant", "content": "return x"},
        {"role": "user", "content": "import json"},
        {"role": "assistant", "content": "json.dumps(value)"},
    ]
}


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines to ``path``."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def json_dataset(
    tmp_path: Path, rows: Sequence[Mapping[str, Any]], **overrides: Any
) -> dict[str, Any]:
    """A ``dataset:`` section reading ``rows`` from a local JSONL file, as a YAML would."""
    data_file = write_jsonl(tmp_path / "train.jsonl", rows)
    section = {
        "hf_name": "json",
        "hf_kwargs": {"data_files": {"train": str(data_file)}, "cache_dir": str(tmp_path / "hf")},
        "split": "train",
        "preprocessing_fn": None,
        "max_seq_len": 32,
        "allow_pad_trimming": False,
        "decoder_only_format": True,
        "shuffle": False,
        "target_prompts": "none",
        "target_responses": "last",
        "packing_ratio": None,
    }
    return {**section, **overrides}


def ids(tokenizer: PreTrainedTokenizerBase, text: str, special: bool = False) -> list[int]:
    """The ids of ``text`` (with the tokenizer's special tokens when ``special``)."""
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def write_mds(folder: Path, columns: dict[str, str], samples: Sequence[Mapping[str, Any]]) -> None:
    """Write ``samples`` to an MDS folder with ``columns``."""
    with MDSWriter(out=str(folder), columns=columns) as writer:
        for sample in samples:
            writer.write(dict(sample))
