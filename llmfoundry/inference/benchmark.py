"""Latency and throughput of ``generate``: the logic of ``scripts/inference/benchmarking/benchmark.py``.

Every combination of batch size, input length and output length is generated with random
prompt tokens and exactly ``output_len`` new tokens (EOS is suppressed until then): a few untimed
warmup runs, then several timed runs. Results go to a CSV and a latency-vs-throughput plot.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel

from llmfoundry.cli.argparsing import accept_both_spellings
from llmfoundry.cli.generate_flags import add_model_flags, add_sampling_flags, take_model_source
from llmfoundry.inference.generate import (
    autocast_context,
    check_autocast,
    generation_token_ids,
    load_for_generation,
)
from llmfoundry.inference.model_loading import context_length_of
from llmfoundry.inference.options import ModelSource
from llmfoundry.utils.cli_utils import run_user_command
from llmfoundry.utils.config_checks import NonNegativeInt, PositiveInt, check_value
from llmfoundry.utils.constants import YAML_SUFFIXES
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.file_utils import atomic_file

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Benchmark generate: latency and throughput over batch sizes x input lengths x output "
    "lengths. Writes results.csv and latency_vs_throughput.png to --output_dir and prints the table."
)
CSV_NAME = "results.csv"
PLOT_NAME = "latency_vs_throughput.png"


@dataclass
class BenchmarkRow:
    """Timings of one (batch size, input length, output length) combination.

    Attributes:
        latency_s_mean: mean seconds of one ``generate`` call over the timed runs.
        latency_s_std: their sample standard deviation (0 with a single timed run).
        tokens_per_s: generated tokens (``batch_size * output_len``) per second of mean latency.
    """

    batch_size: int
    input_len: int
    output_len: int
    latency_s_mean: float
    latency_s_std: float
    tokens_per_s: float


@dataclass
class BenchmarkResult:
    """The rows and the files they were written to."""

    rows: list[BenchmarkRow]
    csv_path: Path
    plot_path: Path


def _check_sizes(name: str, values: Sequence[int]) -> None:
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"--{name} must be one or more positive integers, got {list(values)}")


def _random_prompts(
    vocab_size: int, batch_size: int, input_len: int, avoid: set[int], seed: int
) -> torch.Tensor:
    """Random token ids that are never EOS or padding."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, input_len), generator=generator)
    allowed = [i for i in range(vocab_size) if i not in avoid]
    for special in avoid:
        ids[ids == special] = allowed[special % len(allowed)]
    return ids


@torch.no_grad()
def _time_generate(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    output_len: int,
    pad_token_id: int | None,
    autocast_dtype: str | None,
) -> float:
    """Seconds for one greedy ``generate`` of exactly ``output_len`` new tokens."""
    synchronize = model.device.type == "cuda"
    with autocast_context(model.device.type, autocast_dtype):
        if synchronize:
            torch.cuda.synchronize()
        start = time.perf_counter()
        output = cast(Any, model).generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=output_len,
            min_new_tokens=output_len,
            do_sample=False,
            pad_token_id=pad_token_id,
        )
        if synchronize:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    assert output.shape[1] == input_ids.shape[1] + output_len, "generate stopped early"
    return elapsed


def benchmark_generation(
    model: PreTrainedModel,
    batch_sizes: Sequence[int],
    input_lens: Sequence[int],
    output_lens: Sequence[int],
    *,
    warmup_runs: int = 1,
    timed_runs: int = 3,
    autocast_dtype: str | None = None,
    pad_token_id: int | None = None,
    avoid_token_ids: Sequence[int] = (),
    seed: int = 0,
) -> list[BenchmarkRow]:
    """Time ``generate`` for every combination of batch size, input and output length.

    Args:
        model: the model (eval mode).
        batch_sizes: prompts per ``generate`` call.
        input_lens: prompt lengths in tokens.
        output_lens: generated tokens per prompt.
        warmup_runs: untimed runs before each combination's timed ones.
        timed_runs: timed runs per combination.
        autocast_dtype: run under ``torch.autocast`` in this dtype.
        pad_token_id: passed to ``generate``.
        avoid_token_ids: ids the random prompts never use (EOS, padding).
        seed: seed of the random prompts.

    Returns:
        One row per combination, in the order batch size, input length, output length.

    Raises:
        ConfigError: for empty or non-positive sizes, fewer than one timed run, or an input
            plus output length longer than the model allows.
    """
    for name, values in (
        ("batch_sizes", batch_sizes),
        ("input_lens", input_lens),
        ("output_lens", output_lens),
    ):
        _check_sizes(name, values)
    check_value(timed_runs, PositiveInt, "--timed_runs")
    check_value(warmup_runs, NonNegativeInt, "--warmup_runs")
    limit = context_length_of(model)
    if limit is not None and max(input_lens) + max(output_lens) > limit:
        raise ConfigError(
            f"--input_lens max {max(input_lens)} + --output_lens max {max(output_lens)} exceeds "
            f"the model's {limit} positions; use shorter lengths"
        )
    check_autocast(model.device.type, autocast_dtype)
    embeddings = cast(torch.nn.Embedding, model.get_input_embeddings())
    vocab_size = int(embeddings.weight.shape[0])
    rows = []
    for batch_size, input_len, output_len in itertools.product(
        batch_sizes, input_lens, output_lens
    ):
        ids = _random_prompts(vocab_size, batch_size, input_len, set(avoid_token_ids), seed)
        ids = ids.to(model.device)
        for _ in range(warmup_runs):
            _time_generate(model, ids, output_len, pad_token_id, autocast_dtype)
        latencies = [
            _time_generate(model, ids, output_len, pad_token_id, autocast_dtype)
            for _ in range(timed_runs)
        ]
        mean = statistics.fmean(latencies)
        row = BenchmarkRow(
            batch_size=batch_size,
            input_len=input_len,
            output_len=output_len,
            latency_s_mean=mean,
            latency_s_std=statistics.stdev(latencies) if len(latencies) > 1 else 0.0,
            tokens_per_s=batch_size * output_len / max(mean, 1e-9),
        )
        logger.info("%s", row)
        rows.append(row)
    return rows


def write_csv(rows: Sequence[BenchmarkRow], path: str | Path) -> Path:
    """Write the rows as a CSV with a header (written to a temporary name, then renamed)."""
    path = Path(path)
    with atomic_file(path) as partial, partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(BenchmarkRow)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    return path


def plot_latency_vs_throughput(rows: Sequence[BenchmarkRow], path: str | Path) -> Path:
    """Plot latency against throughput: one line per (input, output) length, one point per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, axes = plt.subplots(figsize=(7, 5))
    shapes = sorted({(r.input_len, r.output_len) for r in rows})
    for input_len, output_len in shapes:
        line = sorted(
            (r for r in rows if (r.input_len, r.output_len) == (input_len, output_len)),
            key=lambda r: r.batch_size,
        )
        xs = [r.tokens_per_s for r in line]
        ys = [r.latency_s_mean * 1000 for r in line]
        axes.plot(xs, ys, marker="o", label=f"in {input_len} / out {output_len}")
        for row, x, y in zip(line, xs, ys, strict=True):
            axes.annotate(f"bs {row.batch_size}", (x, y), textcoords="offset points", xytext=(4, 4))
    axes.set_xlabel("throughput (generated tokens/s)")
    axes.set_ylabel("latency per generate call (ms)")
    axes.set_title("generate: latency vs throughput")
    axes.grid(True, alpha=0.3)
    axes.legend()
    with atomic_file(path) as partial:
        figure.savefig(partial, dpi=100, format="png")
    plt.close(figure)
    return path


def run_benchmark(
    source: ModelSource,
    output_dir: str | Path,
    batch_sizes: Sequence[int] = (1, 2),
    input_lens: Sequence[int] = (16, 32),
    output_lens: Sequence[int] = (8, 16),
    *,
    warmup_runs: int = 1,
    timed_runs: int = 3,
    seed: int = 42,
) -> BenchmarkResult:
    """Load a model (:func:`~llmfoundry.inference.generate.load_for_generation`), benchmark it
    (:func:`benchmark_generation`, ``seed`` seeding the random prompts) and write the CSV and
    the plot.

    Returns:
        The rows and the paths of ``results.csv`` and ``latency_vs_throughput.png`` in ``output_dir``.

    Raises:
        ConfigError, MissingFileError, MissingDependencyError, TokenizerError: on a bad flag,
            path, missing package or tokenizer.
    """
    model, tokenizer = load_for_generation(source)
    return benchmark_and_write(
        model,
        tokenizer,
        output_dir,
        batch_sizes,
        input_lens,
        output_lens,
        warmup_runs=warmup_runs,
        timed_runs=timed_runs,
        autocast_dtype=source.autocast_dtype,
        seed=seed,
    )


def benchmark_and_write(
    model: PreTrainedModel,
    tokenizer: Any,
    output_dir: str | Path,
    batch_sizes: Sequence[int],
    input_lens: Sequence[int],
    output_lens: Sequence[int],
    *,
    warmup_runs: int,
    timed_runs: int,
    autocast_dtype: str | None,
    seed: int,
) -> BenchmarkResult:
    """:func:`benchmark_generation` with prompts that avoid the EOS and pad ids, then the CSV
    and the plot in ``output_dir``."""
    eos, pad = generation_token_ids(model, tokenizer)
    avoid = {pad} if pad is not None else set()
    avoid |= {eos} if isinstance(eos, int) else set(eos or [])
    rows = benchmark_generation(
        model,
        batch_sizes,
        input_lens,
        output_lens,
        warmup_runs=warmup_runs,
        timed_runs=timed_runs,
        autocast_dtype=autocast_dtype,
        pad_token_id=pad,
        avoid_token_ids=sorted(avoid),
        seed=seed,
    )
    output_dir = Path(output_dir)
    return BenchmarkResult(
        rows=rows,
        csv_path=write_csv(rows, output_dir / CSV_NAME),
        plot_path=plot_latency_vs_throughput(rows, output_dir / PLOT_NAME),
    )


def run_yaml_benchmark(yaml_path: str, overrides: Sequence[str] = ()) -> BenchmarkResult:
    """LLM Foundry's form: the model, tokenizer and grid from a YAML (see
    :mod:`~llmfoundry.inference.benchmark_yaml`)."""
    from llmfoundry.inference.benchmark_yaml import build_benchmark_model, load_benchmark_yaml

    config = load_benchmark_yaml(yaml_path, overrides)
    model, tokenizer = build_benchmark_model(config)
    logger.info("benchmark %s", config.benchmark_name)
    return benchmark_and_write(
        model,
        tokenizer,
        config.output_dir,
        config.batch_sizes,
        config.input_lengths,
        config.output_lengths,
        warmup_runs=config.num_warmup_batches,
        timed_runs=config.num_batches,
        autocast_dtype=config.autocast_dtype,
        seed=config.seed,
    )


def build_parser() -> argparse.ArgumentParser:
    """The benchmark script's flags: the model flags, ``--seed`` and the grid."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    add_model_flags(parser)
    add_sampling_flags(parser, only=("seed",))
    add = parser.add_argument
    add("--output_dir", default="inference_benchmark")
    add("--batch_sizes", type=int, nargs="+", default=[1, 2])
    add("--input_lens", type=int, nargs="+", default=[16, 32])
    add("--output_lens", type=int, nargs="+", default=[8, 16])
    add("--warmup_runs", type=int, default=1)
    add("--timed_runs", type=int, default=3)
    return accept_both_spellings(parser)


def print_result(result: BenchmarkResult) -> None:
    """One CSV line per combination, then where the files went."""
    print(",".join(f.name for f in fields(BenchmarkRow)))
    for row in result.rows:
        print(
            ",".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in asdict(row).values())
        )
    print(f"wrote {result.csv_path} and {result.plot_path}")


def print_benchmark(args: argparse.Namespace) -> None:
    """Run the benchmark for the parsed flags and print the table."""
    print_result(run_benchmark(take_model_source(args), **vars(args)))


def main(argv: Sequence[str] | None = None) -> int:
    """The benchmark script: ``benchmark.py <yaml> [key=value ...]`` (LLM Foundry's form) or the
    flags of :func:`build_parser`; runs and prints, returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].endswith(YAML_SUFFIXES):
        return run_user_command(lambda: print_result(run_yaml_benchmark(argv[0], argv[1:])))
    return run_user_command(print_benchmark, build_parser().parse_args(argv))
