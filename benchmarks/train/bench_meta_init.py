"""Peak memory per process of building and initializing an MPT on 1 vs N CPU processes.

Each case is the train command's model setup, in fresh processes launched with ``composer -n
RANKS`` (gloo): build the ``mpt_causal_lm`` inside ``sharded_model_build``, turn ``fsdp_config:
{sharding_strategy: FULL_SHARD}`` into Composer's parallelism config and construct the
``Trainer``, which shards the model with FSDP2 and initializes it. With ``init_device: meta`` on
several processes each one builds on meta and materializes and initializes only its own shards,
so the memory per process must fall as processes are added. One process cannot shard on CPU
(``fsdp_config`` is dropped) and holds the whole model. The ``cpu`` rows are the old way for
comparison: every process builds the whole model, then FSDP keeps its shard.

Columns: ``peak MiB`` is the process' peak resident set (``VmHWM``, Linux) from just before the
model is built to the end of the Trainer's setup; ``above start`` is that minus the resident set
just before the build (``VmHWM`` is reset there through ``/proc/self/clear_refs``), i.e. what the
model setup itself cost; the largest process is shown. ``fp32 GiB`` is one full copy of the
weights. Times are wall-clock seconds of the build + shard + init, on a shared machine.

Examples::

    python benchmarks/train/bench_meta_init.py              # 4 sizes, ~10 min on 2 cores
    python benchmarks/train/bench_meta_init.py --sizes 512x8 --ranks 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VOCAB = 50368
DEFAULT_SIZES = ["512x8", "1024x12", "1536x16", "2048x18"]


def _status_mb(field: str) -> float:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status``, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} line (Linux only)")


def model_section(d_model: int, n_layers: int, init_device: str) -> dict[str, Any]:
    """The ``model:`` section of one case (MPT-style: ALiBi, no biases, tied embeddings)."""
    return {
        "name": "mpt_causal_lm",
        "d_model": d_model,
        "n_heads": d_model // 64,
        "n_layers": n_layers,
        "expansion_ratio": 4,
        "max_seq_len": 2048,
        "vocab_size": VOCAB,
        "no_bias": True,
        "attn_config": {"attn_impl": "torch", "alibi": True},
        "init_device": init_device,
        "use_train_metrics": False,
    }


def worker(d_model: int, n_layers: int, init_device: str, out_dir: Path) -> None:
    """One process of a case: build, shard and initialize; write this rank's numbers."""
    import torch
    from composer import Trainer
    from composer.utils import dist, reproducibility

    from llmfoundry.command_utils.meta_init import sharded_model_build
    from llmfoundry.command_utils.parallelism import build_parallelism_config
    from llmfoundry.utils.builders import build_composer_model_from_section

    dist.initialize_dist("cpu")
    rank, world_size = dist.get_global_rank(), dist.get_world_size()
    reproducibility.seed_all(0)
    fsdp = {"sharding_strategy": "FULL_SHARD"}
    section = model_section(d_model, n_layers, init_device)
    dist.barrier()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from the current RSS
    start_mb, started = _status_mb("VmRSS"), time.perf_counter()
    with sharded_model_build(section, fsdp, "cpu", world_size):
        model = build_composer_model_from_section(section, None)
    parallelism = build_parallelism_config(
        fsdp, None, "cpu", world_size, dist.get_local_world_size(), model=model
    )
    Trainer(
        model=model,
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        parallelism_config=parallelism,
        device="cpu",
        precision="fp32",
        progress_bar=False,
        log_to_console=False,
        seed=0,
    )
    seconds = time.perf_counter() - started
    result = {
        "rank": rank,
        "params": sum(p.numel() for p in model.parameters()),
        "start_mb": start_mb,
        "peak_mb": _status_mb("VmHWM"),
        "seconds": seconds,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    torch.distributed.destroy_process_group()


def _launcher() -> str:
    found = shutil.which(
        "composer", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    if found is None:
        raise SystemExit("the composer launcher is not installed next to this Python")
    return found


def run_case(size: str, ranks: int, init_device: str, timeout: int) -> dict[str, Any]:
    """Launch one case in fresh processes; its row (or an error row)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            _launcher(), "-n", str(ranks), __file__, "--_worker", size, init_device, tmp,
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            error = None if done.returncode == 0 else (done.stdout + done.stderr)[-300:]
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout} s"
        results = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("rank*.json"))]
    row: dict[str, Any] = {"size": size, "ranks": ranks, "init_device": init_device}
    if error is not None or len(results) != ranks:
        return {**row, "error": (error or "missing results").replace("\n", " ")}
    worst = max(results, key=lambda r: r["peak_mb"])
    return {
        **row,
        "params": results[0]["params"],
        "peak_mb": worst["peak_mb"],
        "above_mb": max(r["peak_mb"] - r["start_mb"] for r in results),
        "seconds": max(r["seconds"] for r in results),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    """The rows as a markdown table."""
    print(
        "| d_model x layers | params | fp32 GiB | ranks | init_device | peak MiB / rank "
        "| above start MiB / rank | build+init s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        head = f"| {row['size']} | "
        if "error" in row:
            print(f"{head}| | {row['ranks']} | {row['init_device']} | error: {row['error']} | | |")
            continue
        params = row["params"]
        print(
            f"{head}{params / 1e6:,.0f}M | {params * 4 / 2**30:.2f} | {row['ranks']} | "
            f"{row['init_device']} | {row['peak_mb']:,.0f} | {row['above_mb']:,.0f} | "
            f"{row['seconds']:.1f} |"
        )


def main() -> None:
    """Parse the arguments and run the cases (or one worker process of a case)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="d_modelxn_layers")
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument(
        "--no-cpu-rows",
        dest="cpu_rows",
        action="store_false",
        help="skip the init_device: cpu comparison rows",
    )
    parser.add_argument("--timeout", type=int, default=900, help="seconds per case")
    parser.add_argument("--_worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        size, init_device, out_dir = args._worker
        d_model, n_layers = (int(part) for part in size.split("x"))
        worker(d_model, n_layers, init_device, Path(out_dir))
        return
    rows = []
    for size in args.sizes:
        cases = [(ranks, "meta") for ranks in args.ranks]
        if args.cpu_rows:
            cases += [(ranks, "cpu") for ranks in args.ranks if ranks > 1]
        for ranks, init_device in cases:
            rows.append(run_case(size, ranks, init_device, args.timeout))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
