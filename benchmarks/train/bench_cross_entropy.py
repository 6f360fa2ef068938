"""Fused (chunked) vs torch cross-entropy of a language-model head: speed and peak memory.

One step is forward + backward of the mean next-token loss of ``hidden (tokens, d_model)``
through a head ``weight (vocab, d_model)``:

- ``torch``: ``F.cross_entropy((hidden @ weight.T).float(), targets)``, the full fp32 logits, as
  ``loss_fn: torch_crossentropy`` does (here without keeping the logits alive for the caller,
  which favours torch);
- ``fused``: ``chunked_lm_cross_entropy`` from ``llmfoundry/models/mpt/cross_entropy.py``, as
  ``loss_fn: fused_crossentropy`` does.

Each case runs in a fresh process (this script calling itself with ``--case``), so one case's
allocator cache cannot hide the other's memory. "peak MB" is the most memory held during one step
above what was held just before it (inputs, parameters and runtime excluded; the gradients the
step leaves behind included): ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak
resident set (``VmHWM`` of /proc/self/status, reset through /proc/self/clear_refs), with glibc
told to return every freed block above 128 KiB to the OS so that a reused heap cannot hide a peak.

    python benchmarks/train/bench_cross_entropy.py                 # CPU, vocab 50368
    python benchmarks/train/bench_cross_entropy.py --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

CROSS_ENTROPY_FILE = (
    Path(__file__).parents[2] / "llmfoundry" / "models" / "mpt" / "cross_entropy.py"
)
RESULT_PREFIX = "BENCH_CE_RESULT "
CASES = ("torch", "fused")
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--vocab_size", type=int, default=50368)
    parser.add_argument("--d_model", type=int, default=768)
    parser.add_argument("--seq_len", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--chunk_size", type=int, default=None, help="fused rows per chunk")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: autocast with fp32 inputs (as Composer's amp_bf16)",
    )
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _load_chunked_cross_entropy() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The fused function, loaded from its file alone (skips ``llmfoundry``'s Composer import)."""
    spec = importlib.util.spec_from_file_location("cross_entropy", CROSS_ENTROPY_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.chunked_lm_cross_entropy


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status, e.g. ``VmRSS`` or ``VmHWM``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_mib(step: Callable[[], None], device: torch.device) -> float:
    """Peak memory of one ``step()`` above what was held just before it, in MiB."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / MIB
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    step()
    return (_status_kib("VmHWM") - before) / 1024


def run_case(args: argparse.Namespace) -> dict[str, float]:
    """Time and measure one case in this process."""
    device = torch.device(args.device)
    tokens = args.batch_size * args.seq_len
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, args.d_model, generator=generator).to(device).requires_grad_()
    weight = (torch.randn(args.vocab_size, args.d_model, generator=generator) * 0.02).to(device)
    weight.requires_grad_()
    targets = torch.randint(0, args.vocab_size, (tokens,), generator=generator).to(device)
    chunked = _load_chunked_cross_entropy()
    losses: list[float] = []

    def step() -> None:
        hidden.grad = weight.grad = None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            if args.case == "torch":
                loss = F.cross_entropy((hidden @ weight.T).float(), targets)
            else:
                loss, _ = chunked(hidden, weight, targets, chunk_size=args.chunk_size)
        loss.backward()
        losses.append(loss.item())

    for _ in range(args.warmup):
        step()
    hidden.grad = weight.grad = None  # so that the measured step starts from the inputs alone
    peak = _peak_mib(step, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / max(args.steps, 1)
    return {"ms": seconds * 1000, "peak_mib": peak, "loss": losses[-1]}


def _run_in_subprocess(case: str, argv: list[str]) -> dict[str, float]:
    """Run ``case`` in a fresh interpreter and parse its result line."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    completed = subprocess.run(
        [sys.executable, __file__, *argv, "--case", case],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"case {case} failed:\n{completed.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> None:
    """Run both cases (each in its own process) and print a markdown table."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.case is not None:
        print(RESULT_PREFIX + json.dumps(run_case(args)), flush=True)
        return
    results = {case: _run_in_subprocess(case, argv) for case in CASES}
    tokens = args.batch_size * args.seq_len
    print(
        f"tokens {tokens} (batch {args.batch_size} x seq {args.seq_len}), d_model {args.d_model}, "
        f"vocab {args.vocab_size}, device {args.device}, {args.dtype}, forward+backward, "
        f"{args.steps} timed steps; full fp32 logits alone: {tokens * args.vocab_size * 4 / MIB:.0f} MiB\n"
    )
    print("| loss_fn | ms / step | peak MiB | loss |")
    print("| --- | ---: | ---: | ---: |")
    for case, result in results.items():
        print(f"| {case} | {result['ms']:.1f} | {result['peak_mib']:.0f} | {result['loss']:.5f} |")
    torch_result, fused_result = results["torch"], results["fused"]
    print(
        f"\nfused / torch: peak memory {fused_result['peak_mib'] / torch_result['peak_mib']:.2f}x, "
        f"time {fused_result['ms'] / torch_result['ms']:.2f}x"
    )


if __name__ == "__main__":
    main()
