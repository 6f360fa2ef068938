"""Evaluation results: rows collected from a Trainer, the markdown tables, the result files.

``collect_rows`` turns each evaluator's logged metrics into ``ResultRow``s (ICL evaluators
``{label}/{k}-shot[/{category}]`` and eval loaders); ``render_tables`` makes the markdown tables
that ``scripts/eval/eval.py`` prints (the ICL table has LLM Foundry's columns); ``write_results``
writes ``results.csv``, ``gauntlet.csv`` and ``results.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from composer import Trainer
from composer.core import Callback, State
from composer.loggers import InMemoryLogger, Logger

from llmfoundry.callbacks.eval_gauntlet_config import GauntletConfig
from llmfoundry.utils.file_utils import atomic_write_text

__all__ = [
    "EvalResults",
    "EvalThroughput",
    "ModelResults",
    "ResultRow",
    "collect_rows",
    "gauntlet_categories",
    "render_tables",
    "write_results",
]

_SHOT = re.compile(r"^(\d+)-shot$")


@dataclasses.dataclass(frozen=True)
class ResultRow:
    """One metric of one evaluator for one model.

    ``kind`` is ``icl`` (an ``icl_tasks`` evaluator: ``benchmark`` is the task label,
    ``subtask`` its category, ``num_fewshot`` the shot count) or ``lm`` (an eval loader:
    ``benchmark`` is its label, no subtask or shots).
    """

    model_name: str
    kind: str
    benchmark: str
    subtask: str
    num_fewshot: int | None
    metric: str
    value: float
    category: str = ""


@dataclasses.dataclass
class ModelResults:
    """What one model scored: its result rows, its gauntlet scores (name → score) and each
    evaluator's throughput (label → examples, seconds)."""

    model_name: str
    rows: list[ResultRow]
    gauntlet: dict[str, float]
    throughput: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)


class EvalThroughput(Callback):
    """Records each evaluator's examples (over all processes) and wall-clock seconds."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[int, float]] = {}
        self._started = 0.0

    def eval_start(self, state: State, logger: Logger) -> None:
        del state, logger
        self._started = time.perf_counter()

    def eval_end(self, state: State, logger: Logger) -> None:
        del logger
        label = state.dataloader_label or "eval"
        samples = int(state.eval_timestamp.sample)
        self.records[label] = (samples, time.perf_counter() - self._started)


def throughput_line(model: ModelResults) -> str:
    """``model: ICL N examples in T s (R examples/s)`` over the ICL evaluators ('' if none)."""
    icl = [value for label, value in model.throughput.items() if _parse_icl_label(label)]
    examples = sum(n for n, _ in icl)
    seconds = sum(t for _, t in icl)
    if not icl or seconds <= 0:
        return ""
    return (
        f"{model.model_name}: ICL {examples} examples in {seconds:.1f} s "
        f"({examples / seconds:.1f} examples/s)"
    )


@dataclasses.dataclass
class EvalResults:
    """Every model's results, and the files they were written to (rank 0 only)."""

    run_name: str
    models: list[ModelResults]
    files: list[Path]

    def rows(self) -> list[ResultRow]:
        return [row for model in self.models for row in model.rows]


def _parse_icl_label(label: str) -> tuple[str, str, int] | None:
    """``piqa/0-shot`` → (piqa, '', 0); ``mmlu/5-shot/physics`` → (mmlu, physics, 5)."""
    parts = label.split("/")
    match = _SHOT.match(parts[1]) if len(parts) >= 2 else None
    if match is None:
        return None
    return parts[0], "/".join(parts[2:]), int(match.group(1))


def gauntlet_categories(config: GauntletConfig | None) -> dict[str, str]:
    """Benchmark (task label) → its gauntlet category (the first that lists it)."""
    if config is None:
        return {}
    found: dict[str, str] = {}
    for category in config.categories:
        for bench in category.benchmarks:
            found.setdefault(bench.name, category.name)
    return found


def collect_rows(
    model_name: str,
    trainer: Trainer,
    memory: InMemoryLogger,
    categories: Mapping[str, str],
) -> list[ResultRow]:
    """The last logged value of every evaluator's metrics, as result rows (evaluator order)."""
    rows: list[ResultRow] = []
    for evaluator in trainer.state.evaluators:
        label = evaluator.label
        for metric_name in evaluator.metric_names or ():
            logged = memory.data.get(f"metrics/{label}/{metric_name}")
            if not logged:
                continue
            value = float(cast(Any, logged[-1][1]))
            icl = _parse_icl_label(label)
            if icl is not None:
                benchmark, subtask, shots = icl
                rows.append(
                    ResultRow(
                        model_name,
                        "icl",
                        benchmark,
                        subtask,
                        shots,
                        metric_name,
                        value,
                        categories.get(benchmark, ""),
                    )
                )
            else:
                benchmark = label.removeprefix("eval/") if label != "eval" else "eval"
                rows.append(ResultRow(model_name, "lm", benchmark, "", None, metric_name, value))
    return rows


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def _accuracy_rows(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """Per model and ICL evaluator, the row of its accuracy metric (else its first metric)."""
    chosen: dict[tuple[str, str, str, int | None], ResultRow] = {}
    for row in rows:
        if row.kind != "icl":
            continue
        key = (row.model_name, row.benchmark, row.subtask, row.num_fewshot)
        current = chosen.get(key)
        if current is None or ("Accuracy" in row.metric and "Accuracy" not in current.metric):
            chosen[key] = row
    return list(chosen.values())


def icl_table(rows: Sequence[ResultRow]) -> str:
    """The ICL results: ``| Category | Benchmark | Subtask | Accuracy | Number few shot | Model |``."""
    body = [
        [
            row.category,
            row.benchmark,
            row.subtask,
            f"{row.value:.4f}",
            f"{row.num_fewshot}-shot",
            row.model_name,
        ]
        for row in _accuracy_rows(rows)
    ]
    header = ["Category", "Benchmark", "Subtask", "Accuracy", "Number few shot", "Model"]
    return _markdown(header, body) if body else ""


def lm_table(rows: Sequence[ResultRow]) -> str:
    """The eval-loader results: one row per model and loader, one column per metric."""
    lm = [row for row in rows if row.kind == "lm"]
    metrics = list(dict.fromkeys(row.metric for row in lm))
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in lm:
        cells.setdefault((row.model_name, row.benchmark), {})[row.metric] = f"{row.value:.4f}"
    body = [
        [model, loader, *(v.get(m, "") for m in metrics)] for (model, loader), v in cells.items()
    ]
    return _markdown(["Model", "Eval loader", *metrics], body) if body else ""


def gauntlet_scores_table(models: Sequence[ModelResults]) -> str:
    """The gauntlet scores: one row per category or average, one column per model."""
    scored = [m for m in models if m.gauntlet]
    names = list(dict.fromkeys(name for m in scored for name in m.gauntlet))
    body = [
        [name, *(f"{m.gauntlet[name]:.4f}" if name in m.gauntlet else "" for m in scored)]
        for name in names
    ]
    return _markdown(["Gauntlet", *(m.model_name for m in scored)], body) if body else ""


def render_tables(results: EvalResults) -> str:
    """The markdown tables the command prints (ICL, eval loaders, gauntlet)."""
    rows = results.rows()
    sections = [
        ("In-context learning", icl_table(rows)),
        ("Eval loaders", lm_table(rows)),
        ("Eval gauntlet", gauntlet_scores_table(results.models)),
    ]
    speed = "\n".join(line for line in map(throughput_line, results.models) if line)
    sections.append(("Throughput", speed))
    return "\n\n".join(f"### {title}\n\n{table}" for title, table in sections if table)


CSV_COLUMNS = (
    "model_name",
    "kind",
    "category",
    "benchmark",
    "subtask",
    "num_fewshot",
    "metric",
    "value",
)


def write_results(
    results: EvalResults, folder: Path, metadata: Mapping[str, Any] | None
) -> list[Path]:
    """Write ``results.csv``, ``gauntlet.csv`` (with a gauntlet) and ``results.json``.

    Each file appears whole or not at all (``utils.file_utils.atomic_file``: written aside,
    then renamed; what a killed earlier write left aside is removed first).
    """
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in results.rows():
        record = dataclasses.asdict(row)
        record["num_fewshot"] = "" if row.num_fewshot is None else row.num_fewshot
        writer.writerow([record[c] for c in CSV_COLUMNS])
    atomic_write_text(folder / "results.csv", buffer.getvalue())
    written.append(folder / "results.csv")
    if any(m.gauntlet for m in results.models):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["model_name", "name", "score"])
        for model in results.models:
            for name, score in model.gauntlet.items():
                writer.writerow([model.model_name, name, score])
        atomic_write_text(folder / "gauntlet.csv", buffer.getvalue())
        written.append(folder / "gauntlet.csv")
    document = {
        "run_name": results.run_name,
        "metadata": dict(metadata or {}),
        "models": [
            {
                "model_name": model.model_name,
                "results": [dataclasses.asdict(row) for row in model.rows],
                "gauntlet": model.gauntlet,
                "throughput": {
                    label: {
                        "examples": n,
                        "seconds": t,
                        "examples_per_second": n / t if t else None,
                    }
                    for label, (n, t) in model.throughput.items()
                },
            }
            for model in results.models
        ],
    }
    atomic_write_text(folder / "results.json", json.dumps(document, indent=2) + "\n")
    written.append(folder / "results.json")
    return written
