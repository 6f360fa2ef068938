"""Mixture-of-experts MPT (``ffn_type: torch_dmoe``) vs a dense MPT of the same active parameters.

Both models share everything but the FFN. The MoE has ``--experts`` experts of width
``d_model * --expert_ratio`` and sends each token to ``--top_k`` of them; the dense model's FFN
is ``top_k`` times as wide as one expert, so a token meets the same number of FFN weights in both
(same active parameters, same matmul FLOPs per token). The MoE pays for routing, sorting,
gathering and combining, and holds ``experts / top_k`` times the FFN weights.

Every case runs in a fresh process (``--case`` is the child's entry point): forward + fp32
cross-entropy + backward on random tokens, ``--steps`` timed steps after ``--warmup``. Memory is
``bench_mpt_case.MemoryMeter``'s: peak above the moment before the model was built (CUDA
``max_memory_allocated``; CPU peak RSS).

    python benchmarks/train/bench_moe.py                       # CPU, fp32, ~1 min
    python benchmarks/train/bench_moe.py --device cuda --dtype bf16 --d_model 1024 --n_layers 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

# A sibling file: this script's folder is first on sys.path when it runs.
from bench_mpt_case import MemoryMeter, _device_name, add_shape_flags, shape_of, timed_steps

RESULT_PREFIX = "BENCH_MOE_RESULT "


def _model(args: argparse.Namespace, kind: str) -> Any:
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

    ffn: dict[str, Any]
    if kind == "dense":
        ffn = {
            "ffn_type": "mptmlp",
            "ffn_hidden_size": args.d_model * args.expert_ratio * args.top_k,
        }
    else:
        ffn = {
            "ffn_type": kind,
            "ffn_hidden_size": args.d_model * args.expert_ratio,
            "moe_num_experts": args.experts,
            "moe_top_k": args.top_k,
            "moe_loss_weight": 0.0,
        }
    config = MPTConfig(
        **shape_of(args),
        no_bias=True,
        ffn_config=ffn,
        attn_config={"attn_impl": "sdpa" if args.device == "cuda" else "torch"},
    )
    return MPTForCausalLM(config)


def measure(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Time forward + backward of one model kind; memory as ``MemoryMeter`` counts it."""
    import torch

    torch.manual_seed(0)
    tokens = torch.randint(args.vocab_size, (args.batch_size, args.seq_len), device=args.device)
    meter = MemoryMeter(args.device)
    meter.start()
    model = _model(args, kind).to(args.device)
    model.train()
    model_mb = meter.used_mb()

    speed, _ = timed_steps(model, tokens, args.device, args.dtype, args.warmup, args.steps)
    peak = meter.peak_mb()
    return {
        **speed,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "model_mb": model_mb,
        "peak_mb": peak,
        "device_name": _device_name(args.device),
        "torch": torch.__version__,
    }


def _child(argv: list[str], kind: str) -> dict[str, Any]:
    command = [sys.executable, __file__, *argv, "--case", kind]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return {"error": lines[-1] if lines else f"exit {done.returncode}"}


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> str:
    """The markdown table, one row per model kind, speeds relative to the dense model."""
    dense = results["dense"].get("tokens_per_s")
    any_result = next((r for r in results.values() if "device_name" in r), {})
    lines = [
        f"{any_result.get('device_name', args.device)}, torch {any_result.get('torch', '?')}, "
        f"{args.dtype}; d_model {args.d_model}, {args.n_layers} layers, seq {args.seq_len}, "
        f"batch {args.batch_size}; MoE {args.experts} experts of width "
        f"{args.d_model * args.expert_ratio}, top-{args.top_k}; dense FFN width "
        f"{args.d_model * args.expert_ratio * args.top_k}",
        "",
        "| model | params (M) | tokens/s | vs dense | ms/step | model MB | peak MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, r in results.items():
        if "error" in r:
            lines.append(f"| {kind} | error: {r['error']} | | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / dense:.2f}x" if dense else "-"
        lines.append(
            f"| {kind} | {r['params_m']:.1f} | {r['tokens_per_s']:,.0f} | {ratio} | "
            f"{r['ms_per_step']:.0f} | {r['model_mb']:.0f} | {r['peak_mb']:.0f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    add_shape_flags(parser, d_model=256, n_heads=4, n_layers=4, seq_len=512, vocab_size=8192)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top_k", type=int, default=2)
    parser.add_argument("--expert_ratio", type=int, default=2, help="expert width / d_model")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["dense", "torch_dmoe", "mb_moe"],
        help="dense, torch_dmoe, mb_dmoe or mb_moe (the last two fall back to ours without MegaBlocks)",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.case:
        print(RESULT_PREFIX + json.dumps(measure(args, args.case)), flush=True)
        return 0
    results = {kind: _child(argv, kind) for kind in args.kinds}
    print(report(args, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
