"""hf_checkpointer's LLM Foundry options: mlflow_logging_config, final_register_only,
register_wait_seconds and flatten_imports, against a local MLflow (sqlite) registry."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from composer.loggers import MLFlowLogger
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

import llmfoundry.callbacks.hf_checkpointer as hf_checkpointer_module
from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
from llmfoundry.callbacks.hf_checkpointer_options import imported_modules
from llmfoundry.utils.builders import build_callbacks
from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError
from tests.callbacks.test_hf_checkpointer import SEQ_LEN, _fit, _tiny_mpt
from tests.fixtures import hf_logits, text_ids

MODEL_NAME = "tiny-mpt"


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, Path]:
    """One sqlite MLflow store for the module (creating its tables takes seconds)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    return tracking_uri, MlflowClient(tracking_uri, registry_uri=tracking_uri), root


@pytest.fixture
def mlflow_run(
    mlflow_store: tuple[str, Any, Path], request: pytest.FixtureRequest
) -> tuple[Any, MLFlowLogger]:
    """An MLflow client and a logger on a fresh experiment (artifacts under the store)."""
    tracking_uri, client, root = mlflow_store
    name = request.node.name
    client.create_experiment(name, artifact_location=(root / name).as_uri())
    logger = MLFlowLogger(
        tracking_uri=tracking_uri,
        experiment_name=name,
        log_system_metrics=False,
        model_registry_uri=tracking_uri,
    )
    return client, logger


def _checkpointer(folder: Path, **options: Any) -> HuggingFaceCheckpointer:
    return HuggingFaceCheckpointer(str(folder), save_interval="1ba", **options)


def _registering_checkpointer(
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    register: Callable[..., str],
    **options: Any,
) -> HuggingFaceCheckpointer:
    """A checkpointer registering ``MODEL_NAME``, with ``register`` in place of the registry."""
    monkeypatch.setattr(hf_checkpointer_module, "register_folder", register)
    return _checkpointer(folder, mlflow_registered_model_name=MODEL_NAME, **options)


def _folders(folder: Path) -> list[str]:
    root = folder / "huggingface"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mlflow_logging_config": "chat"}, r"mlflow_logging_config must be a mapping"),
        ({"mlflow_logging_config": {"metadata": [1]}}, r"mlflow_logging_config\.metadata must"),
        (
            {"register_wait_seconds": -1},
            r"register_wait_seconds must be a non-negative float, got int -1",
        ),
        (
            {"register_wait_seconds": "soon"},
            r"register_wait_seconds must be a non-negative float, got str 'soon'",
        ),
        ({"flatten_imports": "llmfoundry"}, r"flatten_imports must be a list of package names"),
        ({"flatten_imports": [""]}, r"flatten_imports must hold non-empty package names"),
    ],
)
def test_bad_values_are_one_line_config_errors(options: dict[str, Any], message: str) -> None:
    section = {"save_folder": "x", "save_interval": "1ba", **options}
    with pytest.raises(ConfigError, match=rf"callbacks\.hf_checkpointer\.{message}"):
        build_callbacks({"hf_checkpointer": section})


@pytest.mark.slow
def test_final_register_only_registers_the_final_model_without_writing_it(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, mlflow_run: tuple[Any, MLFlowLogger]
) -> None:
    client, logger = mlflow_run
    callback = _checkpointer(
        tmp_path / "ck",
        mlflow_registered_model_name=MODEL_NAME,
        final_register_only=True,
        mlflow_logging_config={"task": "llm/v1/chat", "metadata": {"source": "test", "n": 3}},
    )
    model = _tiny_mpt(tokenizer)
    _fit(model, [callback], n_batches=2, loggers=[logger])

    assert _folders(tmp_path / "ck") == ["ba1"], "only the intermediate folder is written"
    (version,) = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert version.tags == {"task": "llm/v1/chat", "metadata.source": "test", "metadata.n": "3"}
    logged = Path(str(version.source).removeprefix("file://"))
    assert json.loads((logged / "input_example.json").read_text()) == {
        "messages": [{"role": "user", "content": "What is Machine Learning?"}]
    }
    weights = load_file(logged / "model.safetensors")
    final = model.model.state_dict()
    assert weights.keys() <= final.keys()
    assert all(torch.equal(weights[name], final[name]) for name in weights)


def test_final_register_only_without_a_model_name_is_ignored(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        callback = _checkpointer(tmp_path / "ck", final_register_only=True)
    assert "final_register_only needs mlflow_registered_model_name; ignoring it" in caplog.text
    _fit(_tiny_mpt(tokenizer), [callback], n_batches=2)
    assert _folders(tmp_path / "ck") == ["ba1", "ba2"]


def test_failed_registration_falls_back_to_writing_the_final_folder(
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    mlflow_run: tuple[Any, MLFlowLogger],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(*args: Any) -> str:
        raise RuntimeError("registry is read-only")

    callback = _registering_checkpointer(
        tmp_path / "ck", monkeypatch, refuse, final_register_only=True
    )
    with caplog.at_level(logging.ERROR):
        _fit(_tiny_mpt(tokenizer), [callback], n_batches=2, loggers=[mlflow_run[1]])
    assert "registering the final model failed (RuntimeError: registry is read-only)" in caplog.text
    assert _folders(tmp_path / "ck") == ["ba1", "ba2"]


def test_register_wait_seconds_bounds_the_wait_for_registration(
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    mlflow_run: tuple[Any, MLFlowLogger],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def slow(*args: Any) -> str:
        time.sleep(1.0)
        return "1"

    callback = _registering_checkpointer(
        tmp_path / "ck", monkeypatch, slow, register_wait_seconds=0.2
    )
    with pytest.raises(TimeoutError, match=r"register_wait_seconds=0\.2; raise callbacks\."):
        _fit(_tiny_mpt(tokenizer), [callback], n_batches=1, loggers=[mlflow_run[1]])


def test_registration_without_mlflow_installed_fails_only_when_requested(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a),
    )
    unregistered = _checkpointer(tmp_path / "a", mlflow_logging_config={"task": "llm/v1/chat"})
    _fit(_tiny_mpt(tokenizer), [unregistered], n_batches=1)
    assert _folders(tmp_path / "a") == ["ba1"]
    registered = _checkpointer(tmp_path / "b", mlflow_registered_model_name=MODEL_NAME)
    with pytest.raises(MissingDependencyError, match=r"mlflow_registered_model_name needs mlflow"):
        _fit(_tiny_mpt(tokenizer), [registered], n_batches=1)


def test_exported_code_imports_no_flattened_package_and_loads_without_it(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tiny_mpt(tokenizer)
    _fit(model, [_checkpointer(tmp_path / "ck")], n_batches=1)
    folder = tmp_path / "ck" / "huggingface" / "ba1"
    sources = sorted(folder.glob("*.py"))
    assert sources, "an MPT export carries its code"
    for source in sources:
        assert not any(
            m.split(".")[0] == "llmfoundry" for m in imported_modules(source.read_text())
        )
    monkeypatch.setitem(sys.modules, "llmfoundry", None)  # `import llmfoundry` now fails
    loaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    ids = text_ids(2, SEQ_LEN, seed=3)
    torch.testing.assert_close(hf_logits(loaded, ids), hf_logits(model.model, ids))


def test_flatten_imports_naming_a_package_the_code_needs_is_an_error(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    callback = _checkpointer(tmp_path / "ck", flatten_imports=["llmfoundry", "torch"])
    with pytest.raises(ConfigError, match=r"flatten_imports: the exported \w+\.py imports torch"):
        _fit(_tiny_mpt(tokenizer), [callback], n_batches=1)
    assert _folders(tmp_path / "ck") == []
