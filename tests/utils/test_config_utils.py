"""Config loading: variables, legacy top-level variables, unknown keys and wrong types."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llmfoundry.utils.config_utils import TrainConfig, load_config
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from tests import REPO

TINY_YAML = REPO / "scripts/train/yamls/pretrain/mpt-tiny-cpu.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


MINIMAL = """
variables:
  seq: 64
model: {name: mpt_causal_lm, max_seq_len: "${variables.seq}"}
tokenizer: {name: gpt2}
optimizer: {name: decoupled_adamw, lr: 1.0e-3}
scheduler: {name: constant_with_warmup, t_warmup: 0ba}
train_loader: {name: text, dataset: {local: x}}
max_duration: 10ba
max_seq_len: ${variables.seq}
global_train_batch_size: 4
"""


def test_variables_resolve_and_overrides_apply(tmp_path: Path) -> None:
    cfg, resolved = load_config(_write(tmp_path, MINIMAL), ["variables.seq=32", "max_duration=3ba"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.max_seq_len == 32
    assert cfg.model["max_seq_len"] == 32
    assert cfg.max_duration == "3ba"
    assert resolved["variables"] == {"seq": 32}
    assert cfg.seed == 17  # LLM Foundry's default where the YAML is silent
    assert cfg.precision == "amp_bf16"


def test_misspelled_override_suggests_the_real_key(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown top-level key 'max_durations'; did you mean 'max_duration'\?"
    ):
        load_config(_write(tmp_path, MINIMAL), ["max_durations=5ba"])


def test_misspelled_yaml_key_fails(tmp_path: Path) -> None:
    text = MINIMAL.replace("global_train_batch_size: 4", "global_train_batchsize: 4")
    with pytest.raises(
        ConfigError, match="global_train_batchsize.*did you mean 'global_train_batch_size'"
    ):
        load_config(_write(tmp_path, text))


def test_legacy_top_level_variable_is_accepted_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = MINIMAL.replace(
        "train_loader: {name: text, dataset: {local: x}}",
        'train_loader: {name: text, dataset: {local: "${data_local}"}}',
    )
    text += "data_local: ./my-data\n"
    with caplog.at_level(logging.WARNING, logger="llmfoundry.utils.config_utils"):
        cfg, _ = load_config(_write(tmp_path, text))
    assert cfg.train_loader["dataset"]["local"] == "./my-data"
    assert cfg.variables == {"seq": 64, "data_local": "./my-data"}
    assert "data_local" in caplog.text and "variables" in caplog.text


def test_wrong_type_names_key_and_type(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="global_train_batch_size must be a positive int or null, got str 'many'"
    ):
        load_config(_write(tmp_path, MINIMAL), ["global_train_batch_size=many"])
    with pytest.raises(ConfigError, match="model must be mapping"):
        load_config(_write(tmp_path, MINIMAL), ["model=7"])


def test_missing_required_key(tmp_path: Path) -> None:
    text = MINIMAL.replace("max_duration: 10ba\n", "")
    with pytest.raises(ConfigError, match="required key 'max_duration' is missing"):
        load_config(_write(tmp_path, text))


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="config file .*nope.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_bad_override_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(_write(tmp_path, MINIMAL), ["max_duration"])


def test_shipped_yamls_validate() -> None:
    yamls = sorted((REPO / "scripts/train/yamls").rglob("*.yaml"))
    assert TINY_YAML in yamls
    for path in yamls:
        cfg, _ = load_config(path)
        assert cfg.model["name"] in {"mpt_causal_lm", "hf_causal_lm", "hf_t5"}, path


EVAL_YAML = """
variables:
  model_name_or_path: org/model
max_seq_len: 64
device_eval_batch_size: 2
models:
- model_name: first
  model:
    name: hf_causal_lm
    pretrained_model_name_or_path: ${variables.model_name_or_path}
  tokenizer:
    name: ${variables.model_name_or_path}
"""


def test_overrides_index_lists_and_set_named_variables(tmp_path: Path) -> None:
    from llmfoundry.utils.config_utils import EvalConfig

    path = tmp_path / "eval.yaml"
    path.write_text(EVAL_YAML)
    overrides = ["models.0.load_path=/ckpt/latest.pt", "model_name_or_path=/models/mine"]
    cfg, resolved = load_config(path, overrides, EvalConfig)
    assert cfg.models is not None
    assert cfg.models[0]["load_path"] == "/ckpt/latest.pt"
    # A bare name that is a variable (not a config key) sets the variable everywhere it is used.
    assert cfg.models[0]["model"]["pretrained_model_name_or_path"] == "/models/mine"
    assert cfg.models[0]["tokenizer"]["name"] == "/models/mine"
    assert resolved["variables"]["model_name_or_path"] == "/models/mine"
    assert cfg.config_dir == str(tmp_path.resolve())
    with pytest.raises(ConfigError, match=r"could not apply override 'models\.3\.load_path=x'"):
        load_config(path, ["models.3.load_path=x"], EvalConfig)
