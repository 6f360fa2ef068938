"""build_tokenizer on folders that also hold a model which ships its own code."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import pytest

from llmfoundry.utils.tokenizer_utils import build_tokenizer


def test_an_export_folder_never_asks_to_run_its_code(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exported MPT folder: tokenizer files next to a config whose auto_map names model code.
    folder = tmp_path / "export"
    shutil.copytree(tokenizer_dir, folder)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llmfoundry_mpt",
                "auto_map": {"AutoConfig": "configuration_mpt.MPTConfig"},
            }
        )
    )
    prompts: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda *args: prompts.append(str(args)) or "n")

    tokenizer = build_tokenizer(str(folder))
    assert prompts == []  # transformers would otherwise stop and ask on the terminal
    reference = build_tokenizer(str(tokenizer_dir))
    assert tokenizer("def load(path):")["input_ids"] == reference("def load(path):")["input_ids"]
