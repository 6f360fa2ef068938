"""LLM Foundry's ``hf_checkpointer`` options about MLflow and exported code.

* ``mlflow_logging_config``: what the registered model is logged with. ``task`` (default
  ``llm/v1/completions``) and ``metadata`` (a mapping) become tags of the model version
  (``task`` and ``metadata.<key>``); ``input_example`` (default: a completions prompt, or a chat
  message for a ``.../chat`` task) is logged next to the model as ``input_example.json``.
* ``register_wait_seconds``: how long the end of training waits for the registration.
* ``flatten_imports``: packages the exported model code must not import. LLM Foundry copies
  such modules into the export; our MPT sources import only torch, transformers and each
  other, so the export is checked instead (a prefix it does import is an error).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

KEY = "callbacks.hf_checkpointer"
MLFLOW_ARTIFACT_PATH = "huggingface_model"
DEFAULT_TASK = "llm/v1/completions"
EXAMPLE_QUESTION = "What is Machine Learning?"
# Keys of mlflow_logging_config this registration uses; LLM Foundry passes others (signature,
# pip_requirements, ...) to mlflow.transformers, which this registration does not call.
USED_LOGGING_KEYS = ("task", "metadata", "input_example")


@dataclass
class MlflowRegistration:
    """How the final folder is registered (``mlflow_registered_model_name`` and friends)."""

    model_name: str
    task: str = DEFAULT_TASK
    metadata: dict[str, Any] = field(default_factory=dict)
    input_example: Any = None
    wait_seconds: float = 7200

    def tags(self) -> dict[str, str]:
        """The model version's tags: ``task`` and one ``metadata.<key>`` per metadata entry."""
        tags = {"task": self.task}
        for name, value in self.metadata.items():
            tags[f"metadata.{name}"] = value if isinstance(value, str) else json.dumps(value)
        return tags


def default_input_example(task: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A chat message for a chat task (``task`` or ``metadata.task`` ending in ``chat``), else
    a completions prompt (LLM Foundry's defaults)."""
    if task.endswith("chat") or str(metadata.get("task", "")).endswith("chat"):
        return {"messages": [{"role": "user", "content": EXAMPLE_QUESTION}]}
    return {"prompt": [EXAMPLE_QUESTION]}


def parse_registration(
    model_name: str | None, logging_config: Any, wait_seconds: float
) -> MlflowRegistration | None:
    """Validate the MLflow options; None when no model is to be registered.

    Raises:
        ConfigError: naming the key, for a ``mlflow_logging_config`` that is not a mapping or a
            ``metadata`` that is not a mapping.
    """
    if logging_config is not None and not isinstance(logging_config, Mapping):
        raise ConfigError(
            f"{KEY}.mlflow_logging_config must be a mapping (task, metadata, input_example), "
            f"got {type(logging_config).__name__}"
        )
    config = dict(logging_config or {})
    metadata = config.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ConfigError(f"{KEY}.mlflow_logging_config.metadata must be a mapping")
    unused = sorted(set(config) - set(USED_LOGGING_KEYS))
    if unused:
        log.warning(
            "%s.mlflow_logging_config: %s not used (this registration uses %s)",
            KEY,
            ", ".join(unused),
            ", ".join(USED_LOGGING_KEYS),
        )
    if model_name is None:
        return None
    task = str(config.get("task") or DEFAULT_TASK)
    example = config.get("input_example")
    return MlflowRegistration(
        model_name=model_name,
        task=task,
        metadata=dict(metadata),
        input_example=example if example is not None else default_input_example(task, metadata),
        wait_seconds=float(wait_seconds),
    )


def check_mlflow_installed() -> None:
    """Raises MissingDependencyError, naming the key, when mlflow is not installed."""
    if importlib.util.find_spec("mlflow") is None:
        raise MissingDependencyError(
            f"{KEY}.mlflow_registered_model_name needs mlflow: pip install "
            "'llm-foundry[loggers]', or remove mlflow_registered_model_name"
        )


def register_folder(mlflow_logger: Any, folder: Path, registration: MlflowRegistration) -> str:
    """Log ``folder`` (and the input example) to the logger's run; register a model version.

    Returns:
        The new version's number.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_logger._mlflow_client
    run_id = mlflow_logger._run_id
    client.log_artifacts(run_id, str(folder), MLFLOW_ARTIFACT_PATH)
    client.log_text(
        run_id,
        json.dumps(registration.input_example, indent=2),
        f"{MLFLOW_ARTIFACT_PATH}/input_example.json",
    )
    source = f"{client.get_run(run_id).info.artifact_uri}/{MLFLOW_ARTIFACT_PATH}"
    name = registration.model_name
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    version = client.create_model_version(
        name, source=source, run_id=run_id, tags=registration.tags()
    )
    log.info("%s: registered %s version %s from %s", KEY, name, version.version, source)
    return str(version.version)


def run_with_deadline(work: Callable[[], Any], seconds: float, what: str) -> Any:
    """Run ``work`` in a thread and wait at most ``seconds`` for it.

    Raises:
        TimeoutError: naming ``register_wait_seconds`` when it takes longer (the thread is left
            to finish on its own).
        Exception: whatever ``work`` raised.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # handed back to the waiting thread
            outcome["error"] = err

    thread = threading.Thread(target=target, name="hf-checkpointer-register", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(
            f"{KEY}: {what} did not finish within register_wait_seconds={seconds:g}; raise "
            f"{KEY}.register_wait_seconds"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def parse_flatten_imports(value: Any) -> tuple[str, ...]:
    """``flatten_imports`` as a tuple of package prefixes.

    Raises:
        ConfigError: if it is not a list of non-empty strings.
    """
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(
            f"{KEY}.flatten_imports must be a list of package names (e.g. [llmfoundry]), "
            f"got {value!r}"
        )
    if not all(isinstance(prefix, str) and prefix for prefix in value):
        raise ConfigError(f"{KEY}.flatten_imports must hold non-empty package names: {value!r}")
    return tuple(value)


def imported_modules(source: str) -> set[str]:
    """The absolute module names a Python source imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def check_flat_imports(folder: Path, prefixes: Sequence[str]) -> None:
    """Check that no exported ``.py`` file in ``folder`` imports a module under ``prefixes``.

    Raises:
        ConfigError: naming the file and the import, which the exported folder could not
            load without that package installed.
    """
    for path in sorted(folder.glob("*.py")):
        for module in sorted(imported_modules(path.read_text(encoding="utf-8"))):
            hit = next((p for p in prefixes if module == p or module.startswith(f"{p}.")), None)
            if hit is not None:
                raise ConfigError(
                    f"{KEY}.flatten_imports: the exported {path.name} imports {module}, which "
                    f"cannot be flattened into the folder; remove '{hit}' from flatten_imports"
                )
