"""Spellings of LLM Foundry's stock YAMLs that its 0.22 loader rejects and ours reads, each with
a warning that names the modern spelling: a top-level section shared through a YAML anchor
(``dataset: &hf_dataset``), ``${global_seed}`` for a value under ``variables:``, and top-level
variables such as ``icl_max_seq_len``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llmfoundry.utils.config_utils import TrainConfig, anchored_top_level_keys, load_config
from llmfoundry.utils.exceptions import ConfigError

BASE = """
model: {name: mpt_causal_lm, max_seq_len: 64}
tokenizer: {name: gpt2}
optimizer: {name: decoupled_adamw, lr: 1.0e-3}
scheduler: {name: constant_with_warmup, t_warmup: 0ba}
max_duration: 10ba
max_seq_len: 64
global_train_batch_size: 4
"""

ANCHORED_DATASET = """
dataset: &hf_dataset
  hf_name: json
  hf_kwargs: {data_dir: ./data}
train_loader: &train_loader
  name: finetuning
  dataset:
    <<: *hf_dataset
    split: train
eval_loader:
  <<: *train_loader
  dataset:
    <<: *hf_dataset
    split: validation
"""


def _load(tmp_path: Path, text: str) -> TrainConfig:
    path = tmp_path / "run.yaml"
    path.write_text(BASE + text)
    cfg, _ = load_config(path, [], TrainConfig)
    return cfg


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_anchored_top_level_dataset_section_is_a_variable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmfoundry.utils.config_utils"):
        cfg = _load(tmp_path, ANCHORED_DATASET)
    shared = {"hf_name": "json", "hf_kwargs": {"data_dir": "./data"}}
    assert cfg.train_loader["dataset"] == {**shared, "split": "train"}
    assert cfg.eval_loader == {"name": "finetuning", "dataset": {**shared, "split": "validation"}}
    assert cfg.variables == {"dataset": shared}
    assert _warnings(caplog) == [
        "top-level key 'dataset' is read as a variable; move it under `variables:` and keep its "
        "anchor there (YAML aliases use it) (top-level variables are deprecated; LLM Foundry "
        "0.22 rejects them)"
    ]


def test_unreferenced_top_level_section_still_fails(tmp_path: Path) -> None:
    # Without an alias that uses it, a top-level `dataset` is a mistake, not a shared section.
    text = "train_loader: {name: text, dataset: {local: x}}\ndataset: {local: y}\n"
    with pytest.raises(ConfigError, match="unknown top-level key 'dataset'"):
        _load(tmp_path, text)


def test_anchored_top_level_keys_finds_only_aliased_top_level_anchors() -> None:
    text = (
        "a: &used {x: 1}\n"
        "b: &unused [1, 2]\n"
        "c: {inner: &nested {y: 2}}\n"
        "d: {<<: *used, z: *nested}\n"
        "e: &scalar 3\n"
        "f: *scalar\n"
    )
    assert anchored_top_level_keys(text) == {"a", "e"}


def test_unnamespaced_interpolation_of_a_variable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        "variables: {global_seed: 23, data: ./d}\n"
        "seed: ${global_seed}\n"
        "train_loader: {name: text, dataset: {local: '${ data}/x', shuffle_seed: '${global_seed}'}}\n"
        "run_name: 'run-${global_seed}-${variables.data}'\n"
    )
    with caplog.at_level(logging.WARNING, logger="llmfoundry.utils.config_utils"):
        cfg = _load(tmp_path, text)
    assert cfg.seed == 23
    assert cfg.train_loader["dataset"] == {"local": "./d/x", "shuffle_seed": 23}
    assert cfg.run_name == "run-23-./d"
    assert _warnings(caplog) == [
        "${data} refers to variables.data; write ${variables.data} (LLM Foundry 0.22 does not "
        "resolve ${data} when data is under `variables:`)",
        "${global_seed} refers to variables.global_seed; write ${variables.global_seed} (LLM "
        "Foundry 0.22 does not resolve ${global_seed} when global_seed is under `variables:`)",
    ]


def test_top_level_key_wins_over_a_variable_of_the_same_name(tmp_path: Path) -> None:
    # ${max_seq_len} names the real top-level key, not variables.max_seq_len.
    text = (
        "variables: {max_seq_len: 128}\n"
        "train_loader: {name: text, dataset: {local: x, max_seq_len: '${max_seq_len}'}}\n"
    )
    assert _load(tmp_path, text).train_loader["dataset"]["max_seq_len"] == 64


def test_top_level_icl_max_seq_len_is_a_variable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        "train_loader: {name: text, dataset: {local: x}}\n"
        "icl_max_seq_len: 32\n"
        "icl_tasks: [{label: t, dataset_uri: t.jsonl, max_seq_len: '${icl_max_seq_len}'}]\n"
    )
    with caplog.at_level(logging.WARNING, logger="llmfoundry.utils.config_utils"):
        cfg = _load(tmp_path, text)
    assert cfg.icl_tasks == [{"label": "t", "dataset_uri": "t.jsonl", "max_seq_len": 32}]
    assert cfg.variables == {"icl_max_seq_len": 32}
    assert "move it under `variables:` and refer to it as ${variables.icl_max_seq_len}" in (
        " ".join(_warnings(caplog))
    )


def test_legacy_variable_whose_only_reference_is_overridden(tmp_path: Path) -> None:
    # tokenizer.name=... replaces the file's only ${tokenizer_name}; the key stays a variable.
    path = tmp_path / "run.yaml"
    text = BASE.replace("tokenizer: {name: gpt2}", "tokenizer: {name: '${tokenizer_name}'}")
    path.write_text(
        text + "tokenizer_name: gpt2\ntrain_loader: {name: text, dataset: {local: x}}\n"
    )
    cfg, _ = load_config(path, ["tokenizer.name=./my-tokenizer"], TrainConfig)
    assert cfg.tokenizer == {"name": "./my-tokenizer"}
    assert cfg.variables == {"tokenizer_name": "gpt2"}
