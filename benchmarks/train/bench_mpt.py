"""Forward+backward throughput and peak memory of our MPT vs ``transformers``' native MPT.

Both models get the same shapes: ALiBi, no biases, tied embeddings, no learned position
embedding, FFN expansion 4 (the native MPT hard-codes the last four). Our model is run once per
``--attn_impls`` value; the native one always runs its own eager attention.

Each (model, attn_impl, seq_len) case runs in a fresh Python process (``bench_mpt_case.py``
next to this file), so one case's allocator state cannot hide another's memory and a case
that crashes or runs out of memory becomes an error row instead of ending the sweep.

Examples::

    python benchmarks/train/bench_mpt.py                    # CPU, small, ~2-3 min
    python benchmarks/train/bench_mpt.py --device cuda      # bf16 autocast, 512..8192
    python benchmarks/train/bench_mpt.py --seq_lens 128 256 --no-native

"peak MB" and "act MB" are explained in ``bench_mpt_case.py``, which measures them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

# A sibling file: this script's folder is first on sys.path when it runs.
from bench_mpt_case import NATIVE, NATIVE_ATTN_LABEL, OURS, RESULT_PREFIX, Case

logger = logging.getLogger("bench_mpt")
CASE_SCRIPT = Path(__file__).resolve().with_name("bench_mpt_case.py")
DTYPE_NOTES = {
    "fp32": "fp32 (no autocast)",
    "bf16": "bf16 autocast, fp32 weights (as Composer's amp_bf16)",
    "fp16": "fp16 autocast, fp32 weights (as Composer's amp_fp16, without loss scaling)",
}

# Defaults per device: the CPU ones keep a whole run to a few minutes on two cores; the CUDA ones
# are MPT-125M's shape and the long-context sweep the issue asks for.
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {
        "d_model": 256,
        "n_heads": 4,
        "n_layers": 4,
        "vocab_size": 8192,
        "seq_lens": [256, 512],
        "batch_size": 2,
        "steps": 3,
        "warmup": 1,
        "attn_impls": ["torch", "sdpa"],
        "dtype": "fp32",
    },
    "cuda": {
        "d_model": 768,
        "n_heads": 12,
        "n_layers": 12,
        "vocab_size": 50368,
        "seq_lens": [512, 1024, 2048, 4096, 8192],
        "batch_size": 2,
        "steps": 10,
        "warmup": 3,
        "attn_impls": ["torch", "flash", "flex"],
        "dtype": "bf16",
    },
}


# --------------------------------------------------------------------------------------------
# Parent process: plan the sweep, run each case in a child, print the table.
# --------------------------------------------------------------------------------------------


def plan_cases(args: argparse.Namespace) -> list[Case]:
    """Every (model, attn_impl, seq_len) case, grouped by seq_len (our impls, then native)."""
    shared = {
        "max_seq_len": max(args.seq_lens),
        "d_model": args.d_model,
        "n_heads": args.n_heads,
        "n_layers": args.n_layers,
        "vocab_size": args.vocab_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "device": args.device,
        "dtype": args.dtype,
        "norm_type": args.norm_type,
    }
    cases: list[Case] = []
    for seq_len in args.seq_lens:
        for impl in args.attn_impls:
            cases.append(Case(model=OURS, attn_impl=impl, seq_len=seq_len, **shared))
        if args.include_native:
            cases.append(Case(model=NATIVE, attn_impl=NATIVE_ATTN_LABEL, seq_len=seq_len, **shared))
    return cases


def _error_from_child(returncode: int, stderr: str) -> str:
    """A one-line reason for a child that printed no result."""
    if returncode < 0:
        reason = f"killed by signal {-returncode}"
        return reason + (" (likely out of memory)" if returncode == -9 else "")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f"exit {returncode}: {lines[-1] if lines else 'no output'}"


def run_case_in_child(case: Case, timeout_s: float) -> dict[str, Any]:
    """Run one case in a fresh interpreter; failures come back as ``{"error": ...}``."""
    command = [sys.executable, str(CASE_SCRIPT), json.dumps(dataclasses.asdict(case))]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return {"error": _error_from_child(done.returncode, done.stderr)}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def format_report(
    args: argparse.Namespace, cases: list[Case], results: list[dict[str, Any]]
) -> str:
    """The header (device, versions, dtype, config, parameter counts) and the markdown table."""
    info = next((r for r in results if "device_name" in r), {})
    params = {}
    for case, result in zip(cases, results, strict=True):
        if "n_params" in result:
            params.setdefault(case.model, result["n_params"])
    param_text = ", ".join(f"{model} {count:,}" for model, count in params.items()) or "n/a"
    if len(set(params.values())) > 1:
        param_text += "  (MISMATCH: the two models do not have the same shapes)"
    exact = all(r.get("peak_is_exact", True) for r in results)
    lines = [
        "## MPT forward+backward benchmark",
        "",
        f"- device: {args.device} ({info.get('device_name', 'unknown')})",
        f"- torch {info.get('torch', '?')}, transformers {info.get('transformers', '?')}",
        f"- dtype: {DTYPE_NOTES[args.dtype]}",
        f"- config: d_model={args.d_model} n_heads={args.n_heads} n_layers={args.n_layers} "
        f"expansion_ratio=4 vocab_size={args.vocab_size} max_seq_len={max(args.seq_lens)} "
        f"alibi no_bias tied-embeddings no-wpe; ours norm_type={args.norm_type}",
        f"- batch_size={args.batch_size}, warmup={args.warmup}, timed steps={args.steps} "
        "(forward + fp32 cross entropy + backward, grads zeroed each step, no optimizer)",
        f"- parameters: {param_text}",
        "- peak MB: peak above the memory held just before the model was built "
        f"({'cuda max_memory_allocated' if args.device == 'cuda' else 'CPU peak RSS, VmHWM'}"
        f"{'' if exact else ', approximate: VmHWM could not be reset'}); "
        "act MB: the part of it above the built model",
        "",
        "| model | attn_impl | seq_len | tokens/s | ms/step | peak MB | act MB | loss |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case, result in zip(cases, results, strict=True):
        head = f"| {case.model} | {case.attn_impl} | {case.seq_len} |"
        if "error" in result:
            lines.append(f"{head} error: {_cell(result['error'])} | - | - | - | - |")
            continue
        lines.append(
            f"{head} {result['tokens_per_s']:,.0f} | {result['ms_per_step']:,.1f} | "
            f"{result['peak_mb']:,.0f} | {result['act_mb']:,.0f} | {result['loss']:.3f} |"
        )
    return "\n".join(lines)


def run_sweep(args: argparse.Namespace) -> int:
    """Run every case, log progress, print the report; exit code 1 if every case failed."""
    cases = plan_cases(args)
    results: list[dict[str, Any]] = []
    for index, case in enumerate(cases, start=1):
        label = f"[{index}/{len(cases)}] {case.model} {case.attn_impl} seq_len={case.seq_len}"
        logger.info("%s ...", label)
        result = run_case_in_child(case, args.case_timeout)
        if "error" in result:
            logger.info("%s: %s", label, result["error"])
        else:
            logger.info(
                "%s: %.0f tokens/s, peak %.0f MB", label, result["tokens_per_s"], result["peak_mb"]
            )
        results.append(result)
    print(format_report(args, cases, results))
    return 0 if any("error" not in r for r in results) else 1


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line; unset knobs take the per-device defaults of ``DEVICE_DEFAULTS``."""
    cpu, cuda = DEVICE_DEFAULTS["cpu"], DEVICE_DEFAULTS["cuda"]

    def default(key: str) -> str:
        return f"default: cpu {cpu[key]}, cuda {cuda[key]}"

    parser = argparse.ArgumentParser(
        description="Forward+backward tokens/s and peak memory of our MPT vs transformers' "
        "native MptForCausalLM, printed as a markdown table.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    parser.add_argument("--d_model", type=int, help=default("d_model"))
    parser.add_argument("--n_heads", type=int, help=default("n_heads"))
    parser.add_argument("--n_layers", type=int, help=default("n_layers"))
    parser.add_argument("--vocab_size", type=int, help=default("vocab_size"))
    parser.add_argument(
        "--seq_lens", type=int, nargs="+", help=default("seq_lens") + "; max_seq_len = the largest"
    )
    parser.add_argument("--batch_size", type=int, help=default("batch_size"))
    parser.add_argument("--steps", type=int, help="timed steps per case; " + default("steps"))
    parser.add_argument("--warmup", type=int, help="untimed steps first; " + default("warmup"))
    parser.add_argument(
        "--attn_impls",
        nargs="+",
        help="our MPT's attn_config.attn_impl values (torch, flash, sdpa, flex); "
        + default("attn_impls"),
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPE_NOTES),
        help="fp32 = no autocast; bf16/fp16 = torch.autocast with fp32 weights; "
        + default("dtype"),
    )
    parser.add_argument(
        "--norm_type",
        default="low_precision_layernorm",
        help="our MPT's norm_type (the native MPT always uses torch LayerNorm); "
        "default: low_precision_layernorm, LLM Foundry's default",
    )
    parser.add_argument(
        "--include_native",
        dest="include_native",
        action="store_true",
        default=True,
        help="also run transformers.MptForCausalLM (default)",
    )
    parser.add_argument(
        "--no-native",
        "--no_native",
        dest="include_native",
        action="store_false",
        help="skip transformers.MptForCausalLM",
    )
    parser.add_argument(
        "--case_timeout",
        type=float,
        default=900.0,
        help="seconds before a case is abandoned (default: 900)",
    )
    return parser


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every unset knob from the chosen device's defaults and check the values."""
    for key, value in DEVICE_DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.d_model % args.n_heads:
        raise SystemExit(f"--d_model {args.d_model} must be divisible by --n_heads {args.n_heads}")
    for key in ("d_model", "n_heads", "n_layers", "vocab_size", "batch_size", "steps"):
        if getattr(args, key) < 1:
            raise SystemExit(f"--{key} must be at least 1")
    if args.warmup < 0 or min(args.seq_lens) < 2:
        raise SystemExit("--warmup must be >= 0 and every --seq_lens value >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the sweep."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = resolve_defaults(args)
    return run_sweep(args)


if __name__ == "__main__":
    sys.exit(main())
