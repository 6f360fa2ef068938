"""The inference benchmark: one CSV row per (batch size, input length, output length) with
consistent numbers, a valid latency-vs-throughput PNG, and errors naming the bad flag.
No timing is asserted."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from PIL import Image

from llmfoundry.inference.benchmark import (
    CSV_NAME,
    PLOT_NAME,
    benchmark_generation,
    run_benchmark,
)
from llmfoundry.inference.generate import load_model_and_tokenizer
from llmfoundry.inference.options import ModelSource
from llmfoundry.utils.exceptions import ConfigError
from tests import REPO
from tests.command_utils.tiny_models import run_script

COLUMNS = [
    "batch_size",
    "input_len",
    "output_len",
    "latency_s_mean",
    "latency_s_std",
    "tokens_per_s",
]


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def test_one_row_per_combination_and_a_png(tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = run_benchmark(
        ModelSource(str(tiny_llama_dir), device="cpu"),
        tmp_path / "out",
        batch_sizes=[1, 3],
        input_lens=[4, 9],
        output_lens=[2, 5],
        warmup_runs=1,
        timed_runs=2,
    )
    assert result.csv_path == tmp_path / "out" / CSV_NAME
    rows = _read_rows(result.csv_path)
    combos = [(int(r["batch_size"]), int(r["input_len"]), int(r["output_len"])) for r in rows]
    assert combos == list(itertools.product([1, 3], [4, 9], [2, 5]))
    for row in rows:
        mean, std, speed = (float(row[k]) for k in COLUMNS[3:])
        assert mean > 0 and std >= 0 and speed > 0
        # throughput counts the generated tokens of the whole batch
        expected = int(row["batch_size"]) * int(row["output_len"]) / mean
        assert speed == pytest.approx(expected, rel=1e-6)
    with Image.open(result.plot_path) as image:
        assert image.format == "PNG"
        assert image.size == (700, 500)
        image.verify()
    assert result.plot_path.name == PLOT_NAME


def test_every_timed_run_generates_exactly_output_len_tokens(tiny_llama_dir: Path) -> None:
    model, _ = load_model_and_tokenizer(ModelSource(str(tiny_llama_dir)))
    lengths: list[int] = []
    generate = cast(Any, model).generate

    def recording_generate(**kwargs: Any) -> torch.Tensor:
        output = generate(**kwargs)
        lengths.append(output.shape[1] - kwargs["input_ids"].shape[1])
        return output

    cast(Any, model).generate = recording_generate
    # Token 0 is EOS: a model eager to stop must still produce output_len tokens.
    with torch.no_grad():
        cast(Any, model).lm_head.bias = torch.nn.Parameter(torch.zeros(512))
        cast(Any, model).lm_head.bias[0] = 100.0
    rows = benchmark_generation(
        model, [2], [6], [3, 7], warmup_runs=2, timed_runs=3, pad_token_id=1, avoid_token_ids=[0, 1]
    )
    assert lengths == [3] * 5 + [7] * 5
    assert [(r.batch_size, r.input_len, r.output_len) for r in rows] == [(2, 6, 3), (2, 6, 7)]


def test_bad_flags_are_named(tiny_llama_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"--input_lens max 60 \+ --output_lens max 8 exceeds the model's 64 positions",
    ):
        run_benchmark(ModelSource(str(tiny_llama_dir), device="cpu"), tmp_path, [1], [60], [8])
    with pytest.raises(
        ConfigError, match=r"--batch_sizes must be one or more positive integers, got \[0\]"
    ):
        run_benchmark(ModelSource(str(tiny_llama_dir), device="cpu"), tmp_path, [0], [4], [2])
    with pytest.raises(ConfigError, match=r"--timed_runs must be a positive int, got int 0"):
        run_benchmark(
            ModelSource(str(tiny_llama_dir), device="cpu"), tmp_path, [1], [4], [2], timed_runs=0
        )
    assert not (tmp_path / CSV_NAME).exists()


def test_script_writes_csv_and_plot(tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = run_script(
        REPO / "scripts/inference/benchmarking/benchmark.py",
        "--name_or_path", str(tiny_llama_dir),
        "--output_dir", str(tmp_path / "bench"),
        "--batch_sizes", "1", "2",
        "--input_lens", "4",
        "--output_lens", "3",
        "--timed_runs", "2",
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _read_rows(tmp_path / "bench" / CSV_NAME)
    assert [(r["batch_size"], r["input_len"], r["output_len"]) for r in rows] == [
        ("1", "4", "3"),
        ("2", "4", "3"),
    ]
    assert result.stdout.splitlines()[0] == ",".join(COLUMNS)
    assert (tmp_path / "bench" / PLOT_NAME).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# LLM Foundry's benchmark YAML (scripts/inference/benchmarking/yamls/1b.yaml), MPT shrunk to CPU.
BENCHMARK_YAML = """
benchmark_name: tiny-mpt
max_seq_len: 32
tokenizer_name: {tokenizer}
tokenizer:
  name: ${{tokenizer_name}}
  kwargs:
    model_max_length: ${{max_seq_len}}
model:
  name: mpt_causal_lm
  init_device: cpu
  d_model: 16
  n_heads: 2
  n_layers: 1
  expansion_ratio: 2
  max_seq_len: ${{max_seq_len}}
  vocab_size: 512
  attn_config:
    attn_impl: torch
device: cpu
model_dtype: fp32
autocast_dtype: null
use_deepspeed: false
batch_sizes: [1, 2, 4]
input_lengths: [5]
output_lengths: [3]
use_cache: true
num_batches: 2
num_warmup_batches: 1
output_dir: {out}
"""


def test_llm_foundry_yaml_form_builds_the_model_and_times_the_grid(
    tokenizer_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    yaml_path = tmp_path / "tiny.yaml"
    yaml_path.write_text(BENCHMARK_YAML.format(tokenizer=tokenizer_dir, out=tmp_path / "bench"))
    result = run_script(
        REPO / "scripts/inference/benchmarking/benchmark.py",
        str(yaml_path),
        "batch_sizes=[1,2]",  # key=value overrides, as LLM Foundry's script takes them
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _read_rows(tmp_path / "bench" / CSV_NAME)
    assert [(r["batch_size"], r["input_len"], r["output_len"]) for r in rows] == [
        ("1", "5", "3"),
        ("2", "5", "3"),
    ]
    # The top-level variables are read as LLM Foundry's 0.x YAMLs use them, with a warning.
    assert "top-level key 'max_seq_len' is read as a variable" in caplog.text
    bad = run_script(
        REPO / "scripts/inference/benchmarking/benchmark.py", str(yaml_path), "use_deepspeed=true"
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: use_deepspeed: true is not supported; set it to false"
    )
