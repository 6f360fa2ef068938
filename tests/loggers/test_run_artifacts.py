"""Run artefacts: a run's metrics as CSV/JSON/PNG at the end of training, and ``llmfoundry plot``."""

from __future__ import annotations

import csv
import math
import struct
from pathlib import Path

import pytest
from composer.core import State
from composer.loggers import InMemoryLogger, LoggerDestination
from PIL import Image
from typer.testing import CliRunner

from llmfoundry.cli.cli import app
from llmfoundry.loggers import run_artifacts as run_artifacts_module
from llmfoundry.loggers.run_artifacts import RunArtifactsLogger, build_run_artifacts_logger
from llmfoundry.utils.builders import build_loggers
from llmfoundry.utils.run_artifacts import (
    MetricPoint,
    read_metrics_csv,
    read_metrics_json,
    write_metrics_csv,
    write_metrics_json,
)
from tests.loggers.tiny_run import TRAIN_LOSS, fit_tiny_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LR_METRIC = "lr-SGD/group0"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


class UploadRecorder(LoggerDestination):
    """Stands in for an object-store uploader: remembers what it was asked to upload."""

    def __init__(self) -> None:
        self.uploads: dict[str, bytes] = {}

    def upload_file(
        self, state: State, remote_file_name: str, file_path: Path, *, overwrite: bool
    ) -> None:
        del state, overwrite
        self.uploads[remote_file_name] = Path(file_path).read_bytes()


UPLOADS = UploadRecorder()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, InMemoryLogger]:
    """A tiny run with the ``run_artifacts`` logger (built from a config) and an in-memory one."""
    folder = tmp_path_factory.mktemp("run") / "metrics"
    reference = InMemoryLogger()
    section = {"run_artifacts": {"folder": str(folder), "remote_folder": "runs/tiny/metrics"}}
    fit_tiny_run([*build_loggers(section), reference, UPLOADS])
    return folder, reference


def test_run_writes_csv_json_and_png(finished_run: tuple[Path, InMemoryLogger]) -> None:
    folder, reference = finished_run
    with (folder / "metrics.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "metric", "value"]
    by_metric: dict[str, dict[int, float]] = {}
    for step, metric, value in rows[1:]:
        by_metric.setdefault(metric, {})[int(step)] = float(value)

    # Every scalar the in-memory logger got is in the CSV, with the same value and step.
    for name, values in reference.data.items():
        expected = {timestamp.batch.value: float(value) for timestamp, value in values}
        assert by_metric[name] == pytest.approx(expected), name
    assert sorted(by_metric[TRAIN_LOSS]) == [0, 1, 2, 3]
    assert sorted(by_metric["metrics/eval/CrossEntropy"]) == [2, 4]

    # The learning rate is recorded after each batch even without an LRMonitor callback.
    lrs = by_metric[LR_METRIC]
    assert sorted(lrs) == [1, 2, 3, 4]
    assert lrs[1] == pytest.approx(0.5)
    assert [lrs[step] for step in sorted(lrs)] == sorted(lrs.values(), reverse=True)

    assert read_metrics_json(folder / "metrics.json") == sorted(
        read_metrics_csv(folder / "metrics.csv"),
        key=lambda p: list(by_metric).index(p.metric),
    )
    width, height = png_size(folder / "metrics.png")
    with Image.open(folder / "metrics.png") as image:
        assert image.format == "PNG"
        assert image.size == (width, height)
        assert width >= 400 and height >= 400
        # Curves were drawn: the image is not a single colour.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 10


def test_files_are_handed_to_uploaders(finished_run: tuple[Path, InMemoryLogger]) -> None:
    folder, _ = finished_run
    names = ("metrics.csv", "metrics.json", "metrics.png")
    assert sorted(UPLOADS.uploads) == [f"runs/tiny/metrics/{name}" for name in names]
    assert UPLOADS.uploads["runs/tiny/metrics/metrics.csv"] == (folder / "metrics.csv").read_bytes()


def test_plot_command_regenerates_png(
    finished_run: tuple[Path, InMemoryLogger], tmp_path: Path
) -> None:
    folder, _ = finished_run
    png = folder / "metrics.png"
    original_size = png_size(png)
    png.unlink()

    # The run's folder (parent of metrics/) is accepted as well as the metrics folder.
    result = CliRunner().invoke(app, ["plot", str(folder.parent)])
    assert result.exit_code == 0, result.output
    assert png_size(png) == original_size
    assert str(png) in result.output

    other = tmp_path / "elsewhere.png"
    result = CliRunner().invoke(app, ["plot", str(folder), "--output", str(other)])
    assert result.exit_code == 0, result.output
    assert png_size(other) == original_size


def test_plot_command_falls_back_to_json(
    finished_run: tuple[Path, InMemoryLogger], tmp_path: Path
) -> None:
    folder, _ = finished_run
    (tmp_path / "metrics.json").write_bytes((folder / "metrics.json").read_bytes())
    result = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert png_size(tmp_path / "metrics.png") == png_size(folder / "metrics.png")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "is not a folder"),
        ("empty_folder", "holds no metrics.csv or metrics.json"),
        ("bad_header", "expected the header 'step,metric,value'"),
        ("bad_row", "line 2: expected 'step,metric,value'"),
        ("no_rows", "hold no values to plot"),
    ],
)
def test_plot_command_reports_bad_folder_in_one_line(
    tmp_path: Path, setup: str, message: str
) -> None:
    folder = tmp_path / "run"
    if setup != "missing":
        folder.mkdir()
    if setup == "bad_header":
        (folder / "metrics.csv").write_text("a,b\n1,2\n")
    elif setup == "bad_row":
        (folder / "metrics.csv").write_text("step,metric,value\nten,loss,1.0\n")
    elif setup == "no_rows":
        (folder / "metrics.csv").write_text("step,metric,value\n")

    result = CliRunner().invoke(app, ["plot", str(folder)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (folder / "metrics.png").exists()


def test_csv_and_json_round_trip_non_finite_values(tmp_path: Path) -> None:
    points = [
        MetricPoint(0, "loss/train/total", 2.5),
        MetricPoint(1, "loss/train/total", math.nan),
        MetricPoint(1, "metrics/eval/LanguagePerplexity", math.inf),
    ]
    from_csv = read_metrics_csv(write_metrics_csv(points, tmp_path / "metrics.csv"))
    assert [(p.step, p.metric) for p in from_csv] == [(p.step, p.metric) for p in points]
    assert from_csv[0].value == 2.5 and math.isnan(from_csv[1].value)
    assert from_csv[2].value == math.inf
    # JSON has no NaN/inf: both come back as NaN (null in the file).
    from_json = read_metrics_json(write_metrics_json(points, tmp_path / "metrics.json"))
    assert from_json[0].value == 2.5 and all(math.isnan(p.value) for p in from_json[1:])
    assert "NaN" not in (tmp_path / "metrics.json").read_text()


def test_only_rank_zero_records_and_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    destination = RunArtifactsLogger(folder=str(tmp_path / "metrics"))
    destination.folder = tmp_path / "metrics"
    monkeypatch.setattr(run_artifacts_module.dist, "get_global_rank", lambda: 1)
    destination.log_metrics({TRAIN_LOSS: 1.0}, step=0)
    assert destination.points == []
    assert destination.write() == []
    assert not (tmp_path / "metrics").exists()


def test_non_scalar_values_are_skipped() -> None:
    import numpy as np
    import torch

    destination = RunArtifactsLogger()
    destination.log_metrics(
        {
            "a": torch.tensor([2.0]),
            "b": np.float32(3.0),
            "c": "text",
            "d": torch.ones(3),
            "e": 4,
        },
        step=7,
    )
    assert destination.points == [
        MetricPoint(7, "a", 2.0),
        MetricPoint(7, "b", 3.0),
        MetricPoint(7, "e", 4.0),
    ]


@pytest.mark.parametrize(
    ("save_folder", "folder", "remote_folder"),
    [
        (None, "{run_name}/metrics", None),
        ("/runs/{run_name}/ckpt/", "/runs/{run_name}/ckpt/metrics", None),
        ("s3://bucket/runs/x", "{run_name}/metrics", "runs/x/metrics"),
    ],
)
def test_artifacts_folder_follows_save_folder(
    save_folder: str | None, folder: str, remote_folder: str | None
) -> None:
    destination = build_run_artifacts_logger(save_folder)
    assert destination.folder_format == folder
    assert destination.remote_folder == remote_folder
