"""The demo's pipeline end to end, shortened: every artefact is written and the loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfoundry.command_utils.demo import run_demo


@pytest.mark.slow
def test_demo_pipeline_writes_every_artefact(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", max_bytes=400_000, max_duration="12ba")
    assert (result.tokenizer_dir / "tokenizer.json").is_file()
    for split in ("train", "val"):
        assert (result.mds_dir / split / "index.json").is_file()
    assert result.checkpoint.is_file()
    config = json.loads((result.hf_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_mpt.MPTForCausalLM"
    assert result.last_train_loss < result.first_train_loss - 1.0
    assert result.eval_loss is not None and result.eval_loss < result.first_train_loss
    assert len(result.generations) == 2
    assert result.generations[0].startswith("def ") and len(result.generations[0]) > len("def ")
