"""One case of ``bench_mpt.py``: build one model, time its forward+backward steps, print JSON.

``bench_mpt.py`` runs this file in a fresh Python process per (model, attn_impl, seq_len) case,
so one case's allocator state cannot hide another's memory and a case that crashes or runs out of
memory becomes an error row instead of ending the sweep. Not meant to be run by hand::

    python benchmarks/train/bench_mpt_case.py '<Case as JSON>'

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
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

logger = logging.getLogger("bench_mpt")

RESULT_PREFIX = "BENCH_MPT_RESULT "
NATIVE = "native"
OURS = "ours"
NATIVE_ATTN_LABEL = "eager (native)"


SHAPE_FLAGS = ("d_model", "n_heads", "n_layers", "seq_len", "vocab_size")


def add_shape_flags(parser: argparse.ArgumentParser, **defaults: int) -> None:
    """The model-shape flags the MoE benchmark and the step profiler share, with the script's
    ``defaults`` (one for each of :data:`SHAPE_FLAGS`)."""
    for name in SHAPE_FLAGS:
        parser.add_argument(f"--{name}", type=int, default=defaults[name])


class Shape(TypedDict):
    """``MPTConfig``'s shape keywords."""

    d_model: int
    n_heads: int
    n_layers: int
    max_seq_len: int
    vocab_size: int


def shape_of(args: argparse.Namespace) -> Shape:
    """The shape :func:`add_shape_flags`' flags give."""
    return Shape(
        d_model=args.d_model,
        n_heads=args.n_heads,
        n_layers=args.n_layers,
        max_seq_len=args.seq_len,
        vocab_size=args.vocab_size,
    )


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
    shapes: dict[str, Any] = {
        "d_model": case.d_model,
        "n_heads": case.n_heads,
        "n_layers": case.n_layers,
        "expansion_ratio": 4,
        "max_seq_len": case.max_seq_len,
        "vocab_size": case.vocab_size,
        "no_bias": True,
        "learned_pos_emb": False,
        "resid_pdrop": 0.0,
        "emb_pdrop": 0.0,
        "use_cache": False,
        "tie_word_embeddings": True,
    }
    if case.model == NATIVE:
        from transformers import MptConfig, MptForCausalLM

        native_config = MptConfig(
            **shapes,
            layer_norm_epsilon=1e-5,
            attn_config={"alibi": True, "alibi_bias_max": 8, "attn_pdrop": 0},
        )
        return MptForCausalLM(native_config)
    mpt_config_cls, mpt_model_cls = _load_our_mpt()
    our_config = mpt_config_cls(
        **shapes,
        norm_type=case.norm_type,
        norm_eps=1e-5,
        attn_config={
            "alibi": True,
            "alibi_bias_max": 8,
            "attn_pdrop": 0.0,
            "attn_impl": case.attn_impl,
        },
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


def train_step(model: Any, tokens: Any, device: str, dtype: str) -> Any:
    """Zero (free) the gradients, run forward + fp32 next-token cross entropy + backward."""
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    with _autocast(device, dtype):
        logits = model(input_ids=tokens, use_cache=False).logits
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1)
    )
    loss.backward()
    return loss


def timed_steps(
    model: Any, tokens: Any, device: str, dtype: str, warmup: int, steps: int
) -> tuple[dict[str, float], Any]:
    """``steps`` timed :func:`train_step` calls after ``warmup`` untimed ones (the device is
    synchronized at both ends of the timed stretch).

    Returns:
        ``tokens_per_s`` and ``ms_per_step``; the last step's loss.
    """
    import torch

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    loss = torch.zeros(())
    start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            start = time.perf_counter()
        loss = train_step(model, tokens, device, dtype)
    sync()
    elapsed = time.perf_counter() - start
    speed = {
        "tokens_per_s": tokens.numel() * steps / elapsed,
        "ms_per_step": 1000 * elapsed / steps,
    }
    return speed, loss


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
    train_step(model, tokens, tiny.device, tiny.dtype)
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

    speed, loss = timed_steps(model, tokens, case.device, case.dtype, case.warmup, case.steps)
    peak_mb = meter.peak_mb()
    return {
        **speed,
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


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench_mpt_case.py '<Case as JSON>' (bench_mpt.py runs it)")
    sys.exit(run_single_case(sys.argv[1]))
