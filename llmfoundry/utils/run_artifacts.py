"""Run artefacts: a run's logged metrics as ``metrics.csv``, ``metrics.json`` and ``metrics.png``.

The files are written at the end of training by
:class:`~llmfoundry.loggers.run_artifacts.RunArtifactsLogger` and can be regenerated from the
CSV (or JSON) with ``llmfoundry plot <folder>``. Nothing here depends on Composer.

Formats:

* ``metrics.csv`` is *long* format, one row per logged value, header ``step,metric,value``,
  rows in logging order. Long rather than wide because metrics are logged at different steps
  (eval every N batches, loss every batch): no empty cells, and new metrics add rows, not columns.
  ``step`` is the training batch count (Composer's logging step); non-finite values are written
  as ``nan``/``inf``.
* ``metrics.json`` is ``{"format_version": 1, "metrics": {name: {"steps": [...],
  "values": [...]}}}``, metrics in first-logged order; non-finite values are ``null``.
* ``metrics.png`` has three panels over the step: train loss (``loss/train/*``), eval metrics
  (``metrics/*`` except ``metrics/train/*``) and learning rate (``lr-*``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfoundry.utils.exceptions import DatasetError, MissingFileError

METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
METRICS_PNG = "metrics.png"
CSV_HEADER = ("step", "metric", "value")
JSON_FORMAT_VERSION = 1
METRICS_SUBFOLDER = "metrics"


@dataclass(frozen=True)
class MetricPoint:
    """One logged value: ``metric`` had ``value`` at training step ``step``."""

    step: int
    metric: str
    value: float


@dataclass(frozen=True)
class PlotPanel:
    """One subplot of ``metrics.png``: a title and which metric names it shows."""

    title: str
    prefixes: tuple[str, ...]
    excluded_prefixes: tuple[str, ...] = ()

    def shows(self, metric: str) -> bool:
        """Whether ``metric`` belongs in this panel."""
        return metric.startswith(self.prefixes) and not metric.startswith(self.excluded_prefixes)


PLOT_PANELS = (
    PlotPanel("train loss", ("loss/train",)),
    PlotPanel("eval metrics", ("metrics/",), excluded_prefixes=("metrics/train/",)),
    PlotPanel("learning rate", ("lr-",)),
)


def group_by_metric(points: Iterable[MetricPoint]) -> dict[str, tuple[list[int], list[float]]]:
    """``{metric: (steps, values)}`` in first-logged order, each series in logging order."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for point in points:
        steps, values = series.setdefault(point.metric, ([], []))
        steps.append(point.step)
        values.append(point.value)
    return series


def _tmp_name(path: Path) -> Path:
    """Where ``path`` is written before ``os.replace`` renames it, so no reader sees half a file."""
    return path.with_name(f".{path.name}.tmp")


def write_metrics_csv(points: Sequence[MetricPoint], path: str | Path) -> Path:
    """Write ``points`` as long-format CSV (``step,metric,value``) to ``path``, atomically."""
    path = Path(path)
    tmp = _tmp_name(path)
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for point in points:
            writer.writerow((point.step, point.metric, repr(point.value)))
    os.replace(tmp, path)
    return path


def write_metrics_json(points: Sequence[MetricPoint], path: str | Path) -> Path:
    """Write ``points`` grouped by metric as JSON to ``path``, atomically (NaN/inf as null)."""
    path = Path(path)
    metrics = {
        name: {
            "steps": steps,
            "values": [value if math.isfinite(value) else None for value in values],
        }
        for name, (steps, values) in group_by_metric(points).items()
    }
    tmp = _tmp_name(path)
    tmp.write_text(
        json.dumps({"format_version": JSON_FORMAT_VERSION, "metrics": metrics}, indent=1),
        encoding="utf-8",
    )
    os.replace(tmp, path)
    return path


def read_metrics_csv(path: str | Path) -> list[MetricPoint]:
    """Read a ``metrics.csv`` written by :func:`write_metrics_csv`.

    Raises:
        DatasetError: if the header or a row is malformed (names the file and line).
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or tuple(header) != CSV_HEADER:
            raise DatasetError(
                f"{path}: expected the header '{','.join(CSV_HEADER)}', got {header!r}"
            )
        points = []
        for line_number, row in enumerate(rows, start=2):
            try:
                step, metric, value = row
                points.append(MetricPoint(int(step), metric, float(value)))
            except ValueError as err:
                raise DatasetError(
                    f"{path}, line {line_number}: expected 'step,metric,value', got {row!r} ({err})"
                ) from err
    return points


def read_metrics_json(path: str | Path) -> list[MetricPoint]:
    """Read a ``metrics.json`` written by :func:`write_metrics_json` (points ordered by metric).

    Raises:
        DatasetError: if the file is not that format.
    """
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        points = []
        for name, series in data["metrics"].items():
            steps, values = series["steps"], series["values"]
            if len(steps) != len(values):
                raise ValueError(f"metric {name!r} has {len(steps)} steps but {len(values)} values")
            points.extend(
                MetricPoint(int(step), str(name), math.nan if value is None else float(value))
                for step, value in zip(steps, values, strict=True)
            )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise DatasetError(
            f"{path}: not a metrics file ({{'metrics': {{name: {{'steps', 'values'}}}}}}): {err}"
        ) from err
    return points


def find_metrics_folder(folder: str | Path) -> Path:
    """The folder holding ``metrics.csv``/``metrics.json``: ``folder`` or its ``metrics/``.

    Accepting the parent lets ``llmfoundry plot`` take a run's save folder as well.

    Raises:
        MissingFileError: if neither holds a metrics file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder} is not a folder; give the run's metrics folder")
    for candidate in (folder, folder / METRICS_SUBFOLDER):
        if (candidate / METRICS_CSV).is_file() or (candidate / METRICS_JSON).is_file():
            return candidate
    raise MissingFileError(
        f"{folder} holds no {METRICS_CSV} or {METRICS_JSON} (nor does {folder / METRICS_SUBFOLDER}); "
        "give the folder a training run wrote its metrics to"
    )


def read_metrics(folder: str | Path) -> list[MetricPoint]:
    """The points in ``folder``'s ``metrics.csv``, or its ``metrics.json`` if there is no CSV."""
    folder = find_metrics_folder(folder)
    if (folder / METRICS_CSV).is_file():
        return read_metrics_csv(folder / METRICS_CSV)
    return read_metrics_json(folder / METRICS_JSON)


def plot_metrics(points: Sequence[MetricPoint], path: str | Path, title: str | None = None) -> Path:
    """Draw train loss, eval metrics and learning rate over the step into a PNG, atomically.

    Uses matplotlib's object API with the Agg canvas, so no display and no global pyplot state.

    Args:
        points: the logged values.
        path: where the PNG goes.
        title: a heading for the figure (e.g. the run name).

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = group_by_metric(points)
    figure = Figure(figsize=(8, 9), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(PLOT_PANELS), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, PLOT_PANELS, strict=True):
        ax.set_title(panel.title)
        ax.grid(True, alpha=0.3)
        shown = [name for name in series if panel.shows(name)]
        for name in shown:
            steps, values = series[name]
            ax.plot(steps, values, label=name, marker="." if len(steps) < 50 else None)
        if shown:
            ax.legend(fontsize="small", loc="best")
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
    axes[-1].set_xlabel("step (batches)")
    if title:
        figure.suptitle(title)
    path = Path(path)
    tmp = _tmp_name(path)
    figure.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def write_run_artifacts(
    points: Sequence[MetricPoint], folder: str | Path, plot: bool = True, title: str | None = None
) -> list[Path]:
    """Write ``metrics.csv``, ``metrics.json`` and (if ``plot``) ``metrics.png`` into ``folder``.

    Args:
        points: the logged values, in logging order.
        folder: created if missing.
        plot: whether to draw the PNG.
        title: a heading for the PNG.

    Returns:
        The paths written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        write_metrics_csv(points, folder / METRICS_CSV),
        write_metrics_json(points, folder / METRICS_JSON),
    ]
    if plot:
        written.append(plot_metrics(points, folder / METRICS_PNG, title=title))
    return written


def regenerate_plot(folder: str | Path, output: str | Path | None = None) -> Path:
    """Redraw ``metrics.png`` from the metrics files in ``folder`` (``llmfoundry plot``).

    Args:
        folder: a metrics folder, or a folder whose ``metrics/`` is one.
        output: the PNG to write; default ``metrics.png`` beside the metrics files.

    Returns:
        The PNG's path.

    Raises:
        MissingFileError: if there are no metrics files.
        DatasetError: if they are malformed or hold no values.
    """
    metrics_folder = find_metrics_folder(folder)
    points = read_metrics(metrics_folder)
    if not points:
        raise DatasetError(f"{metrics_folder}: the metrics files hold no values to plot")
    return plot_metrics(points, output or metrics_folder / METRICS_PNG)


__all__ = [
    "METRICS_CSV",
    "METRICS_JSON",
    "METRICS_PNG",
    "PLOT_PANELS",
    "MetricPoint",
    "find_metrics_folder",
    "group_by_metric",
    "plot_metrics",
    "read_metrics",
    "read_metrics_csv",
    "read_metrics_json",
    "regenerate_plot",
    "write_metrics_csv",
    "write_metrics_json",
    "write_run_artifacts",
]
