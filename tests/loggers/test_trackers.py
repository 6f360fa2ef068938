"""Each experiment tracker named in ``loggers:`` records a real run's metrics where users look."""

from __future__ import annotations

import importlib.util
import json
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from composer.loggers import InMemoryLogger

from llmfoundry.utils.builders import build_loggers
from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError
from tests.loggers.tiny_run import TRAIN_LOSS, fit_tiny_run

MAX_BATCHES = 4
EVAL_METRIC = "metrics/eval/CrossEntropy"


def fit_with(section: dict[str, Any]) -> InMemoryLogger:
    """Fit the tiny run with the loggers of a ``loggers:`` section plus an in-memory reference."""
    reference = InMemoryLogger()
    fit_tiny_run([*build_loggers(section), reference], max_batches=MAX_BATCHES)
    return reference


def logged(reference: InMemoryLogger, name: str) -> dict[int, float]:
    """``{step: value}`` of one metric as the in-memory logger saw it."""
    return {timestamp.batch.value: float(value) for timestamp, value in reference.data[name]}


def test_inmemory_logger_holds_loss_of_each_batch() -> None:
    memory = build_loggers({"inmemory": {}})[0]
    assert isinstance(memory, InMemoryLogger)
    fit_tiny_run([memory], max_batches=MAX_BATCHES)
    losses = logged(memory, TRAIN_LOSS)
    assert sorted(losses) == list(range(MAX_BATCHES))
    assert all(value > 0 for value in losses.values())
    assert sorted(logged(memory, EVAL_METRIC)) == [2, 4]


def read_wandb_records(path: Path) -> Iterator[bytes]:
    """The records of a ``.wandb`` file: a 7-byte ``:W&B`` header, then LevelDB log blocks.

    wandb no longer ships a Python reader for its offline files, so this follows the format:
    32 KiB blocks of chunks with a 7-byte header (crc32, uint16 length, type: 1 full, 2 first,
    3 middle, 4 last); a block's tail shorter than a header is padding.
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    block, header = 32768, 7
    pos, pending = 7, b""
    while pos + header <= len(data):
        left_in_block = block - pos % block
        if left_in_block < header:
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        pos += header
        chunk = data[pos : pos + length]
        pos += length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def wandb_history(path: Path) -> list[dict[str, Any]]:
    """The history rows (``wandb.log`` calls) of an offline run file."""
    from google.protobuf import json_format
    from google.protobuf.message import Message
    from wandb.proto import wandb_internal_pb2

    # protoc's classes are built when the module runs: no stub names them, so look it up.
    record_class: type[Message] = vars(wandb_internal_pb2)["Record"]
    rows = []
    for raw in read_wandb_records(path):
        record = record_class()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            fields = json_format.MessageToDict(record, preserving_proto_field_name=True)
            rows.append(
                {
                    item.get("key") or "/".join(item["nested_key"]): json.loads(item["value_json"])
                    for item in fields["history"]["item"]
                }
            )
    return rows


def test_wandb_offline_run_holds_losses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    reference = fit_with({"wandb": {"project": "tiny", "tags": ["test"]}})

    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb's service process writes the file; on a loaded machine the last records can land
    # a moment after the run is closed, so wait (bounded) for the history to appear.
    deadline = time.monotonic() + 60
    history = wandb_history(run_file)
    while not any(TRAIN_LOSS in row for row in history) and time.monotonic() < deadline:
        time.sleep(0.5)
        history = wandb_history(run_file)
    losses = {row["_step"]: row[TRAIN_LOSS] for row in history if TRAIN_LOSS in row}
    assert losses == pytest.approx(logged(reference, TRAIN_LOSS))
    evals = {row["_step"]: row[EVAL_METRIC] for row in history if EVAL_METRIC in row}
    assert evals == pytest.approx(logged(reference, EVAL_METRIC))


def test_mlflow_sqlite_store_has_loss_history(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reference = fit_with(
        {
            "mlflow": {
                "tracking_uri": tracking_uri,
                "experiment_name": "tiny",
                "log_system_metrics": False,
            }
        }
    )

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, TRAIN_LOSS)
    assert {m.step: m.value for m in history} == pytest.approx(logged(reference, TRAIN_LOSS))
    evals = client.get_metric_history(run.info.run_id, EVAL_METRIC)
    assert {m.step: m.value for m in evals} == pytest.approx(logged(reference, EVAL_METRIC))


def test_tensorboard_event_files_hold_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reference = fit_with({"tensorboard": {"log_dir": str(tmp_path)}})

    # Composer writes the scalars under <log_dir>/<run_name>, in one or more event files.
    event_dirs = {path.parent for path in tmp_path.rglob("events.out.tfevents.*")}
    scalars: dict[str, dict[int, float]] = {}
    for event_dir in event_dirs:
        accumulator = EventAccumulator(str(event_dir))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                scalars.setdefault(tag, {})[event.step] = event.value
    assert scalars[TRAIN_LOSS] == pytest.approx(logged(reference, TRAIN_LOSS), rel=1e-6)
    assert scalars[EVAL_METRIC] == pytest.approx(logged(reference, EVAL_METRIC), rel=1e-6)


METRIC_LINE = re.compile(r"^\[metric\]\[batch=(\d+)\]: (\S+): (\S+)\s*$")


def file_metrics(path: Path) -> dict[str, dict[int, float]]:
    """``{metric: {step: value}}`` from a file logger's ``[metric][batch=N]: name: value`` lines."""
    metrics: dict[str, dict[int, float]] = {}
    for line in path.read_text().splitlines():
        match = METRIC_LINE.match(line)
        if match:
            metrics.setdefault(match[2], {})[int(match[1])] = float(match[3])
    return metrics


@pytest.mark.parametrize(
    ("log_level", "expected_loss_steps"), [("batch", [0, 1, 2, 3]), ("epoch", [4])]
)
def test_file_logger_writes_metric_lines(
    tmp_path: Path, log_level: str, expected_loss_steps: list[int]
) -> None:
    log_file = tmp_path / "logs" / "run.txt"
    reference = fit_with(
        {
            "file": {
                "filename": str(log_file),
                "log_level": log_level,
                "capture_stdout": False,
                "capture_stderr": False,
            }
        }
    )

    losses = file_metrics(log_file)[TRAIN_LOSS]
    assert sorted(losses) == expected_loss_steps
    expected = logged(reference, TRAIN_LOSS)
    for step, value in losses.items():
        # The file has 4 decimals; at epoch level the value is the epoch's last loss.
        assert value == pytest.approx(expected.get(step, expected[max(expected)]), abs=1e-4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"log_level": "step"},
            r"^loggers\.file\.log_level must be one of 'batch', 'epoch', 'fit', got str 'step'$",
        ),
        (
            {"flush_interval": 0},
            r"^loggers\.file\.flush_interval must be a positive int, got int 0$",
        ),
    ],
)
def test_file_logger_rejects_bad_options(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_loggers({"file": {"filename": str(tmp_path / "x.txt"), **options}})


def test_misspelled_logger_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"loggers\.wandb\.projct .*did you mean 'project'"):
        build_loggers({"wandb": {"projct": "tiny"}})


@pytest.mark.parametrize("name", ["wandb", "mlflow", "tensorboard"])
def test_missing_tracker_package_names_the_extra(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec_without(module: str, *args: Any, **kwargs: Any) -> Any:
        return None if module == name else real_find_spec(module, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec_without)
    with pytest.raises(
        MissingDependencyError, match=r"pip install 'llm-foundry\[loggers\]'"
    ) as err:
        build_loggers({name: {}})
    assert "\n" not in str(err.value)
