"""Forward+backward throughput and peak memory of our MPT vs ``transformers``' native MPT.

Both models get the same shapes: ALiBi, no biases, tied embeddings, no learned position
embedding, FFN expansion 4 (the native MPT hard-codes the last four). Our model is run once per
``--attn_impls`` value; the native one always runs its own eager attention.

Each (model, attn_impl, seq_len) case runs in a fresh Python process (this script calling itself
with ``--_single_case``), so one case's allocator state cannot hide another's memory and a case
that crashes or runs out of memory becomes an error row instead of ending the sweep.

Examples::

    python scripts/train/benchmarking/bench_mpt.py                    # CPU, small, ~2-3 min
    python scripts/train/benchmarking/bench_mpt.py --device cuda      # bf16 autocast, 512..8192
    python scripts/train/benchmarking/bench_mpt.py --seq_lens 128 256 --no-native

Memory is "peak MB": the most memory held at any time from just before the model is built to the
end of the last step, minus what was held just before the build. It therefore counts weights,
gradients, activations and temporaries, but not the Python/torch runtime. On CUDA it is
``torch.cuda.max_memory_allocated`` (after ``reset_peak_memory_stats``); on CPU it is the process'
peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``). "act MB" is the part of the
peak above the built model, i.e. what the steps themselves added.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench_mpt")

RESULT_PREFIX = "BENCH_MPT_RESULT "
NATIVE = "native"
OURS = "ours"
NATIVE_ATTN_LABEL = "eager (native)"
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


@dataclasses.dataclass(frozen=True)
class Case:
    """One measurement: a model, an attention implementation and a sequence length."""

    model: str
    attn_impl: str
    seq_len: int
    max_seq_len: int
    d_model: int
    n_heads: int
    n_layers: int
    vocab_size: int
    batch_size: int
    steps: int
    warmup: int
    device: str
    dtype: str
    norm_type: str


# --------------------------------------------------------------------------------------------
# Child process: build one model and time it.
# --------------------------------------------------------------------------------------------


def _load_our_mpt() -> tuple[Any, Any]:
    """Import ``MPTConfig`` and ``MPTForCausalLM`` from ``llmfoundry/models/mpt``.

    The folder is loaded as a standalone package (it only uses relative imports, as an exported
    ``trust_remote_code`` checkpoint does), which skips ``llmfoundry/__init__.py`` and its ~15 s
    Composer import in every case's process. If that fails, the ordinary package import is used.
    """
    spec = importlib.util.find_spec("llmfoundry")
    if spec is not None and spec.submodule_search_locations:
        mpt_dir = Path(next(iter(spec.submodule_search_locations))) / "models" / "mpt"
        name = "_bench_mpt_standalone"
        try:
            mpt_spec = importlib.util.spec_from_file_location(
                name, mpt_dir / "__init__.py", submodule_search_locations=[str(mpt_dir)]
            )
            if mpt_spec is None or mpt_spec.loader is None:
                raise ImportError(f"cannot load {mpt_dir}")
            module = importlib.util.module_from_spec(mpt_spec)
            sys.modules[name] = module
            mpt_spec.loader.exec_module(module)
            return module.MPTConfig, module.MPTForCausalLM
        except ImportError as error:
            sys.modules.pop(name, None)
            logger.warning(
                "standalone import of %s failed (%s); importing llmfoundry", mpt_dir, error
            )
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

    return MPTConfig, MPTForCausalLM


def _build_model(case: Case) -> Any:
    """Build the case's model (on CPU, in fp32) with the shared shapes."""
    if case.model == NATIVE:
        from transformers import MptConfig, MptForCausalLM

        native_config = MptConfig(
            d_model=case.d_model,
            n_heads=case.n_heads,
            n_layers=case.n_layers,
            expansion_ratio=4,
            max_seq_len=case.max_seq_len,
            vocab_size=case.vocab_size,
            no_bias=True,
            learned_pos_emb=False,
            resid_pdrop=0.0,
            emb_pdrop=0.0,
            layer_norm_epsilon=1e-5,
            attn_config={"alibi": True, "alibi_bias_max": 8, "attn_pdrop": 0},
            use_cache=False,
            tie_word_embeddings=True,
        )
        return MptForCausalLM(native_config)
    mpt_config_cls, mpt_model_cls = _load_our_mpt()
    our_config = mpt_config_cls(
        d_model=case.d_model,
        n_heads=case.n_heads,
        n_layers=case.n_layers,
        expansion_ratio=4,
        max_seq_len=case.max_seq_len,
        vocab_size=case.vocab_size,
        no_bias=True,
        learned_pos_emb=False,
        resid_pdrop=0.0,
        emb_pdrop=0.0,
        norm_type=case.norm_type,
        norm_eps=1e-5,
        attn_config={
            "alibi": True,
            "alibi_bias_max": 8,
            "attn_pdrop": 0.0,
            "attn_impl": case.attn_impl,
        },
        use_cache=False,
        tie_word_embeddings=True,
    )
    return mpt_model_cls(our_config)


def _proc_status_mb(field: str) -> float:
    """A ``VmRSS``/``VmHWM``-style line of ``/proc/self/status``, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} line (Linux only)")


class MemoryMeter:
    """Current and peak memory of one device, relative to a baseline taken by :meth:`start`."""

    def __init__(self, device: str) -> None:
        import torch

        self.device = device
        self.torch = torch
        self.baseline_mb = 0.0
        self.peak_is_exact = True

    def _current_mb(self) -> float:
        if self.device == "cuda":
            return self.torch.cuda.memory_allocated() / 2**20
        return _proc_status_mb("VmRSS")

    def start(self) -> None:
        """Forget earlier peaks and take the current usage as zero."""
        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            try:
                # "5" resets the peak resident set (VmHWM) to the current one (Linux >= 4.0).
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                # Then VmHWM also covers the imports; they sit well below a training step.
                self.peak_is_exact = False
        self.baseline_mb = self._current_mb()

    def used_mb(self) -> float:
        """Memory held now, above the baseline."""
        return self._current_mb() - self.baseline_mb

    def peak_mb(self) -> float:
        """Most memory held since :meth:`start`, above the baseline."""
        if self.device == "cuda":
            return self.torch.cuda.max_memory_allocated() / 2**20 - self.baseline_mb
        return _proc_status_mb("VmHWM") - self.baseline_mb


def _autocast(device: str, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``dtype`` (weights stay fp32), or nothing for fp32."""
    import torch

    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(
        device_type=device, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16
    )


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {torch.get_num_threads()} threads"
    return f"cpu, {torch.get_num_threads()} threads"


def _train_step(model: Any, tokens: Any, case: Case) -> Any:
    """Zero (free) the gradients, run forward + fp32 next-token cross entropy + backward."""
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    with _autocast(case.device, case.dtype):
        logits = model(input_ids=tokens, use_cache=False).logits
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1)
    )
    loss.backward()
    return loss


def _warm_runtime(case: Case) -> None:
    """Run one step of a tiny model of the same kind, then drop it.

    The first step pages in kernels and libraries and starts thread pools; doing that before the
    memory baseline keeps this one-off runtime cost out of the model's numbers.
    """
    import torch

    tiny = dataclasses.replace(
        case, d_model=8 * case.n_heads, n_layers=1, vocab_size=64, seq_len=16, max_seq_len=16
    )
    model = _build_model(tiny).to(case.device)
    tokens = torch.randint(tiny.vocab_size, (1, tiny.seq_len), device=case.device)
    _train_step(model, tokens, tiny)
    del model, tokens


def measure(case: Case) -> dict[str, Any]:
    """Time ``case.steps`` forward+backward steps after ``case.warmup`` untimed ones.

    Each step zeroes the gradients (freeing them), runs the model on random tokens, takes the
    next-token cross entropy in fp32 and backpropagates. No optimizer step is taken.

    Returns:
        ``tokens_per_s``, ``ms_per_step``, ``peak_mb``, ``act_mb``, ``model_mb``, ``n_params``,
        ``loss`` (of the last step) and ``peak_is_exact``.
    """
    import torch

    _warm_runtime(case)
    torch.manual_seed(0)  # after the warm-up, so that every case sees the same tokens
    tokens = torch.randint(case.vocab_size, (case.batch_size, case.seq_len), device=case.device)
    meter = MemoryMeter(case.device)
    meter.start()
    model = _build_model(case).to(case.device)
    model.train()
    model_mb = meter.used_mb()
    n_params = sum(p.numel() for p in model.parameters())

    def sync() -> None:
        if case.device == "cuda":
            torch.cuda.synchronize()

    loss = torch.zeros(())
    start = time.perf_counter()
    for step in range(case.warmup + case.steps):
        if step == case.warmup:
            sync()
            start = time.perf_counter()
        loss = _train_step(model, tokens, case)
    sync()
    elapsed = time.perf_counter() - start
    peak_mb = meter.peak_mb()
    return {
        "tokens_per_s": case.batch_size * case.seq_len * case.steps / elapsed,
        "ms_per_step": 1000 * elapsed / case.steps,
        "peak_mb": peak_mb,
        "act_mb": peak_mb - model_mb,
        "model_mb": model_mb,
        "n_params": n_params,
        "loss": float(loss),
        "peak_is_exact": meter.peak_is_exact,
    }


def run_single_case(case_json: str) -> int:
    """Child entry point: measure one case and print its result as one JSON line."""
    import torch
    import transformers

    case = Case(**json.loads(case_json))
    result: dict[str, Any] = {
        "device_name": _device_name(case.device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        result.update(measure(case))
    except torch.OutOfMemoryError:
        result["error"] = "out of memory"
    except Exception as error:  # a failing case becomes a table row, whatever the failure
        result["error"] = (
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        )
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


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
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_single_case",
        json.dumps(dataclasses.asdict(case)),
    ]
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
    parser.add_argument("--_single_case", help=argparse.SUPPRESS)
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
    """Parse the command line and run the sweep (or, internally, a single case)."""
    args = build_parser().parse_args(argv)
    if args._single_case is not None:
        return run_single_case(args._single_case)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = resolve_defaults(args)
    return run_sweep(args)


if __name__ == "__main__":
    sys.exit(main())
