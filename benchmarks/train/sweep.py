"""Training-throughput sweep over MPT sizes and fast-path switches, in LLM Foundry's table columns.

Each case trains the stock ``scripts/train/yamls/pretrain/mpt-<size>.yaml`` for ``--batches``
batches through ``train.py``'s own code path (Composer's launcher, ``composer -n <gpus>``) on
random-token MDS data this script writes once, and reads the speed monitor's throughput over the
last ``--window`` batches (so compilation and warm-up are left out). Every case runs in its own
processes; one that fails or times out becomes an error row and the sweep goes on. The tables
(markdown and CSV) are rewritten after every case, so a sweep stopped early keeps its rows.

Variants switch the fast path on and off, each a name and train overrides::

    python benchmarks/train/sweep.py --models 125m 350m --out_dir sweep_out \\
        --variant base: \\
        --variant flex:model.attn_config.attn_impl=flex \\
        --variant flex+compile:model.attn_config.attn_impl=flex,compile_config.scope=blocks

    python benchmarks/train/sweep.py --tiny --out_dir /tmp/sweep   # CPU, ~1 min

MFU counts the model's matmul FLOPs, ``(6 * params + 12 * layers * d_model * seq) * tokens``
(LLM Foundry's convention: ``3 * (2 * params * seq + 4 * layers * d_model * seq^2)`` per sample);
HFU adds the forward recomputed under activation checkpointing (4x instead of 3x). "Model
TFLOP" is the achieved model TFLOP/s per GPU. Peak FLOP/s come from ``--peak_tflops`` or, on
a known GPU, from its bf16/fp16 dense figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("sweep_worker.py")
YAMLS = REPO / "scripts" / "train" / "yamls" / "pretrain"
# Micro-batches per GPU at seq 2048 that fit one 80 GB GPU with the stock YAML's settings.
DEFAULT_MICRO_BATCH = {"125m": 32, "350m": 16, "760m": 12, "1b": 8, "3b": 8, "7b": 4}
# Dense bf16/fp16 tensor-core peak FLOP/s (published datasheet figures), by device-name part.
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "A10G": 125.0, "L4": 121.0}
COLUMNS = (
    "Model", "Variant", "SeqLen", "#GPUs", "GPU", "MFU", "HFU", "Model TFLOP", "MicroBatchSize",
    "GradAccum", "GlobalBatchSize", "Throughput S/s", "T/s", "T/s/GPU", "Precision", "Sharding",
    "Act. ckpt", "NumParams", "Peak GB", "Graphs warm/end", "Loss first/last", "Error",
)  # fmt: skip
TINY_OVERRIDES = (
    "model.d_model=64",
    "model.n_heads=2",
    "model.n_layers=2",
    "model.vocab_size=512",
    "model.attn_config.attn_impl=torch",
    "precision=fp32",
)


def build_parser() -> argparse.ArgumentParser:
    """The sweep's flags."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["125m", "350m", "760m", "1b"])
    parser.add_argument("--variant", action="append", metavar="NAME:OVERRIDES", default=[])
    parser.add_argument("--seq_len", type=int, default=2048)
    parser.add_argument("--micro_batch", type=int, help="per GPU (default: per model size)")
    parser.add_argument("--grad_accum", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--window", type=int, default=10, help="batches the throughput covers")
    parser.add_argument("--precision", default="amp_bf16")
    parser.add_argument("--peak_tflops", type=float, help="per GPU (default: by GPU name)")
    parser.add_argument("--case_timeout", type=int, default=600, help="seconds per case")
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke mode: a 2-layer d64 model")
    return parser


def parse_variants(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``NAME:k=v,k=v`` strings as (name, overrides); none given: the stock YAML as is."""
    variants = []
    for spec in specs or ["stock:"]:
        name, sep, rest = spec.partition(":")
        if not sep or not name:
            raise SystemExit(f"--variant {spec!r}: write NAME:key=value,key=value (or NAME:)")
        variants.append((name, [item for item in rest.split(",") if item]))
    return variants


def write_data(out_dir: Path, seq_len: int, vocab: int, samples: int) -> tuple[Path, Path]:
    """Random-token MDS splits ``train_small``/``val_small`` and a small BPE tokenizer (once)."""
    import numpy as np

    from llmfoundry.data.data import TOKENS_COLUMNS, write_mds
    from llmfoundry.utils.tokenizer_utils import train_byte_level_bpe

    data, tokenizer = out_dir / "data", out_dir / "tokenizer"
    marker = data / f"done-{seq_len}-{vocab}-{samples}"
    if not marker.exists():
        shutil.rmtree(data, ignore_errors=True)
        rng = np.random.default_rng(0)
        for split, count in (("train_small", samples), ("val_small", 4)):
            rows = (
                {"tokens": rng.integers(0, vocab, seq_len, dtype=np.int32)} for _ in range(count)
            )
            write_mds(rows, str(data / split), TOKENS_COLUMNS, compression=None)
        marker.touch()
    if not (tokenizer / "tokenizer.json").exists():
        texts = [
            path.read_text() for path in sorted(Path(shutil.__file__).parent.glob("[a-c]*.py"))
        ]
        train_byte_level_bpe(texts, 300, tokenizer, model_max_length=seq_len)
    return data, tokenizer


def case_overrides(args: argparse.Namespace, micro_batch: int, data: Path, tok: Path) -> list[str]:
    """Train overrides shared by every case of this sweep."""
    overrides = [
        f"variables.data_local={data}",
        f"variables.max_seq_len={args.seq_len}",
        f"tokenizer.name={tok}",
        f"max_duration={args.batches}ba",
        f"eval_interval={args.batches}ba",
        "eval_subset_num_batches=1",
        f"device_train_microbatch_size={micro_batch}",
        f"global_train_batch_size={micro_batch * args.grad_accum * args.gpus}",
        f"device_eval_batch_size={micro_batch}",
        f"precision={args.precision}",
        "train_loader.num_workers=2",
        "eval_loader.num_workers=1",
        f"callbacks.speed_monitor.window_size={args.window}",
        "console_log_interval=10ba",
    ]
    return overrides + list(TINY_OVERRIDES if args.tiny else ())


def run_case(args: argparse.Namespace, name: str, overrides: list[str]) -> dict[str, Any]:
    """Train one case in fresh processes; its summary, or ``{'error': ...}``."""
    cases = args.out_dir / "cases"
    cases.mkdir(parents=True, exist_ok=True)
    result, log = cases / f"{name}.json", cases / f"{name}.log"
    result.unlink(missing_ok=True)
    model = name.split("-")[0]
    launcher = [sys.executable, "-m", "composer.cli.launcher", "-n", str(args.gpus)]
    command = [*launcher, str(WORKER), "--result", str(result), str(YAMLS / f"mpt-{model}.yaml")]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    started = time.monotonic()
    try:
        with log.open("w") as out:
            done = subprocess.run(
                [*command, *overrides], stdout=out, stderr=subprocess.STDOUT, env=env,
                timeout=args.case_timeout, check=False, cwd=cases,
            )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.case_timeout} s (log: {log})"}
    if done.returncode != 0 or not result.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0][:160]} (log: {log})"}
    summary = json.loads(result.read_text())
    summary["wall_s"] = round(time.monotonic() - started, 1)
    return summary


def peak_flops(args: argparse.Namespace, gpu: str) -> float | None:
    """Peak FLOP/s per device for MFU, or None when unknown (a CPU)."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    return next((tf * 1e12 for key, tf in PEAK_TFLOPS.items() if key in gpu), None)


def table_row(
    args: argparse.Namespace, model: str, variant: str, got: dict[str, Any]
) -> dict[str, Any]:
    """One row of LLM Foundry's benchmark table from a case summary."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row.update({"Model": f"MPT-{model.upper()}", "Variant": variant, "SeqLen": args.seq_len})
    if "error" in got:
        row["Error"] = got["error"]
        return row
    seq, gpus, sps = got["seq_len"], got["world_size"], got["samples_per_sec"] or 0.0
    model_flops = 3 * (2 * got["n_params"] * seq + 4 * got["n_layers"] * got["d_model"] * seq**2)
    hardware_flops = model_flops * 4 / 3 if got["act_ckpt"] else model_flops
    peak = peak_flops(args, got["gpu"])
    row.update({
        "#GPUs": gpus, "GPU": got["gpu"], "MicroBatchSize": got["micro_batch"],
        "GradAccum": got["global_batch"] // (got["micro_batch"] * gpus),
        "GlobalBatchSize": got["global_batch"], "Throughput S/s": round(sps, 2),
        "T/s": round(sps * seq), "T/s/GPU": round(sps * seq / gpus), "Precision": got["precision"],
        "Sharding": got["sharding"], "Act. ckpt": got["act_ckpt"],
        "NumParams": got["n_params"], "Model TFLOP": round(model_flops * sps / gpus / 1e12, 1),
        "Graphs warm/end": f"{got['graphs_after_warmup']}/{got['graphs_at_end']}",
        "Loss first/last": f"{got['first_loss']:.4f}/{got['last_loss']:.4f}"
        if got["first_loss"] is not None else "",
        "Peak GB": round(got["peak_mem_gb"], 1) if got["peak_mem_gb"] is not None else "",
    })  # fmt: skip
    if peak:
        row["MFU"] = f"{100 * model_flops * sps / gpus / peak:.2f}%"
        row["HFU"] = f"{100 * hardware_flops * sps / gpus / peak:.2f}%"
    return row


def write_tables(out_dir: Path, rows: list[dict[str, Any]]) -> str:
    """Write ``sweep.csv`` and ``sweep.md``; return the markdown."""
    with (out_dir / "sweep.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows([row[column] for column in COLUMNS] for row in rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    (out_dir / "sweep.md").write_text(markdown)
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Run every (model, variant) case and print the table."""
    args = build_parser().parse_args(argv)
    if args.tiny:
        args.models, args.seq_len, args.precision = args.models[:1], 128, "fp32"
        args.batches, args.window = min(args.batches, 6), min(args.window, 3)
    variants = parse_variants(args.variant)
    args.out_dir = args.out_dir.resolve()  # cases run in its cases/ folder
    args.out_dir.mkdir(parents=True, exist_ok=True)
    most_batch = max(args.micro_batch or DEFAULT_MICRO_BATCH[m] for m in args.models)
    samples = most_batch * args.grad_accum * args.gpus * (args.batches + 1)
    vocab = 512 if args.tiny else 50368
    data, tokenizer = write_data(args.out_dir, args.seq_len, vocab, samples)
    rows = []
    for model in args.models:
        micro_batch = args.micro_batch or (2 if args.tiny else DEFAULT_MICRO_BATCH[model])
        shared = case_overrides(args, micro_batch, data, tokenizer)
        for variant, extra in variants:
            got = run_case(args, f"{model}-{variant}".replace("+", "_"), [*shared, *extra])
            rows.append(table_row(args, model, variant, got))
            print(write_tables(args.out_dir, rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
