"""The demo's pipeline end to end, shortened: every artefact is written and the loss falls."""

from __future__ import annotations

import gc
import json
import logging
import warnings
from pathlib import Path

import pytest

from llmfoundry.command_utils.demo import run_demo
from llmfoundry.utils.quiet_logs import SILENCED
from tests.bad_inputs.cli_case import RecordingHandler


@pytest.mark.slow
def test_demo_pipeline_writes_every_artefact(tmp_path: Path) -> None:
    # Every warning a user sees must be one they can act on: the ones we silence are listed in
    # llmfoundry/utils/quiet_logs.py, and any other shows up here.
    handler = RecordingHandler(logging.WARNING)
    loggers = [logging.getLogger(), logging.getLogger("transformers")]
    for logger in loggers:
        logger.addHandler(handler)
    gc.collect()  # what earlier tests left for the collector is not the demo's to report
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            result = run_demo(tmp_path / "demo", max_bytes=400_000, max_duration="12ba")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert [str(w.message) for w in caught] == []
    assert [f"{r.name}: {r.getMessage()}" for r in handler.records] == []
    assert {(s.source, s.message) for s in SILENCED} == {
        ("python", "No optimizer was specified"),
        ("python", "DataloaderNumBatchesWarning"),
        ("transformers.configuration_utils", "`use_return_dict` is deprecated"),
    }
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

    # scripts/eval/yamls/demo.yaml scored the export and the checkpoint alike, on every sample
    # task type, and its eval loader saw what the training run's evaluation saw.
    by_model: dict[str, dict[tuple[str, str, int | None, str], float]] = {}
    for row in result.evaluation.rows():
        key = (row.benchmark, row.subtask, row.num_fewshot, row.metric)
        by_model.setdefault(row.model_name, {})[key] = row.value
    assert set(by_model) == {"demo-mpt-hf", "demo-mpt-composer"}
    hf, composer = by_model["demo-mpt-hf"], by_model["demo-mpt-composer"]
    assert hf.keys() == composer.keys()
    assert hf == pytest.approx(composer, rel=1e-5, abs=1e-6)
    assert {key[0] for key in hf} == {"lambada", "piqa", "arc_easy", "winograd", "triviaqa", "eval"}
    assert hf[("eval", "", None, "LanguageCrossEntropy")] == pytest.approx(result.eval_loss)
    gauntlet = result.evaluation.models[0].gauntlet
    assert {"world_knowledge", "commonsense_reasoning", "core_average"} <= gauntlet.keys()
    assert [path.name for path in result.evaluation.files] == [
        "results.csv",
        "gauntlet.csv",
        "results.json",
    ]
