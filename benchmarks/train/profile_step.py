"""Where one MPT training step's time goes: forward, loss, backward, optimizer step, by phase.

Builds our ``MPTForCausalLM`` (MPT-125M's shape by default) and times each phase of a training
step separately, with the device synchronized around each one, then the same step with the
alternatives that the fast-path switches choose between: the fused chunked loss vs full logits +
``F.cross_entropy``, Composer's ``DecoupledAdamW`` vs ``torch.optim.AdamW`` (foreach, fused).
``--top`` adds torch.profiler's busiest kernels of one forward+backward.

    python benchmarks/train/profile_step.py --device cuda            # bf16 autocast
    python benchmarks/train/profile_step.py --d_model 256 --n_layers 4 --n_heads 4 \\
        --vocab_size 8192 --seq_len 512 --batch 8                               # CPU, fp32
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import llmfoundry  # noqa: F401
except ImportError:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
import torch.nn.functional as F

# A sibling file: this script's folder is first on sys.path when it runs.
from bench_mpt_case import add_shape_flags, shape_of

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM


def build_parser() -> argparse.ArgumentParser:
    """The script's flags."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    add_shape_flags(parser, d_model=768, n_heads=12, n_layers=12, seq_len=2048, vocab_size=50368)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--attn_impl", default=None, help="default: flex on cuda, torch on cpu")
    parser.add_argument("--compile_blocks", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=0, help="print the N busiest profiler ops")
    return parser


def sync(device: torch.device) -> None:
    """Wait for queued device work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseClock:
    """Accumulates synchronized wall time per named phase over the timed steps."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = {}
        self.recording = False

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block (only while recording)."""
        sync(self.device)
        start = time.perf_counter()
        yield
        sync(self.device)
        if self.recording:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start


def build_model(args: argparse.Namespace, device: torch.device) -> MPTForCausalLM:
    """MPT with the stock pretraining YAMLs' layer choices (ALiBi, no biases, tied head)."""
    attn_impl = args.attn_impl or ("flex" if device.type == "cuda" else "torch")
    config = MPTConfig(
        **shape_of(args), expansion_ratio=4,
        attn_config={"attn_impl": attn_impl, "alibi": True}, no_bias=True,
    )  # fmt: skip
    model = MPTForCausalLM(config)
    torch.nn.Module.to(model, device)
    if args.compile_blocks:
        model.compile_blocks()
    return model


def optimizers(params: list[torch.nn.Parameter]) -> dict[str, torch.optim.Optimizer]:
    """The optimizer steps to compare, each over the same parameters."""
    from composer.optim import DecoupledAdamW

    choices: dict[str, torch.optim.Optimizer] = {
        "DecoupledAdamW (Composer, the YAMLs' decoupled_adamw)": DecoupledAdamW(params, lr=1e-4),
        "torch AdamW foreach": torch.optim.AdamW(params, lr=1e-4, foreach=True),
    }
    choices["torch AdamW fused"] = torch.optim.AdamW(params, lr=1e-4, fused=True)
    return choices


def run_steps(
    args: argparse.Namespace, step: Callable[[PhaseClock], None], clock: PhaseClock
) -> None:
    """``--warmup`` untimed steps, then ``--steps`` timed ones."""
    for index in range(args.warmup + args.steps):
        clock.recording = index >= args.warmup
        step(clock)


def main(argv: list[str] | None = None) -> int:
    """Time every phase and print a table of milliseconds per step."""
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args, device)
    ids = torch.randint(0, args.vocab_size, (args.batch, args.seq_len), device=device)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    clock = PhaseClock(device)
    choices = optimizers([p for p in model.parameters() if p.requires_grad])

    def fused_step(clock: PhaseClock) -> None:
        with clock.phase("forward + fused loss"), autocast:
            loss = model(ids, labels=ids, loss_impl="fused").loss
        with clock.phase("backward (fused loss)"):
            loss.backward()
        for name, optimizer in choices.items():
            with clock.phase(f"optimizer step: {name}"):
                optimizer.step()
        model.zero_grad(set_to_none=True)

    def logits_step(clock: PhaseClock) -> None:
        with clock.phase("forward + logits + F.cross_entropy"), autocast:
            logits = model(ids).logits
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1)
            )
        del logits
        with clock.phase("backward (F.cross_entropy)"):
            loss.backward()
        model.zero_grad(set_to_none=True)

    run_steps(args, fused_step, clock)
    run_steps(args, logits_step, clock)
    tokens = args.batch * args.seq_len
    print(f"\n{device.type}, batch {args.batch} x seq {args.seq_len}, {args.steps} timed steps\n")
    print("| phase | ms / step | tokens/s of this phase |\n| --- | --- | --- |")
    for name, total in clock.totals.items():
        per_step = total / args.steps
        print(f"| {name} | {1000 * per_step:.1f} | {tokens / per_step:,.0f} |")
    if args.top:
        print_top_ops(args, model, ids, autocast)
    return 0


def print_top_ops(args: argparse.Namespace, model: Any, ids: torch.Tensor, autocast: Any) -> None:
    """torch.profiler's ``--top`` ops of one fused forward+backward, by self device time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if ids.is_cuda:
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        with autocast:
            loss = model(ids, labels=ids, loss_impl="fused").loss
        loss.backward()
        sync(ids.device)
    key = "self_cuda_time_total" if ids.is_cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.top, max_name_column_width=60))


if __name__ == "__main__":
    sys.exit(main())
