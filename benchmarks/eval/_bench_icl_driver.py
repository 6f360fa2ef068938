"""Driver of ``benchmarks/eval/bench_icl.py``: one side's ICL evaluation, timed, as JSON.

Usage (``bench_icl.py`` runs it; not meant to be called by hand)::

    <python> benchmarks/eval/_bench_icl_driver.py <eval.yaml> <result.json> <threads>

The same file drives both sides: run by this project's interpreter it imports this project's
``llmfoundry``; run by the reference install's interpreter (``bench_icl.py --lf_python``, LLM
Foundry 0.22) it imports that one. Both packages expose
``llmfoundry.command_utils.eval.eval_from_yaml(yaml_path, overrides)`` and run a Composer
``Trainer.eval()``, so the driver only wraps public names from outside and never touches
either package's code:

* ``build_run_evaluators`` / ``build_composer_model_from_section`` as the eval module sees them (timed);
* ``composer.Trainer.eval`` (timed, and given a callback that times every evaluator between
  ``EVAL_START`` and ``EVAL_END``, counts its examples and padded tokens, fingerprints its
  inputs and reads its metrics).

Run it from a folder without a ``llmfoundry`` package in it (the benchmark uses its output
folder), so that the interpreter's own install is the one imported.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.trainer import Trainer

PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    " def main(argv):\n    return 0\n",
    "Question: Which is heavier?\nAnswer: a stone",
)


class EvaluatorTimer(Callback):
    """Per evaluator: seconds from ``EVAL_START`` to ``EVAL_END``, examples, tokens, metrics."""

    def __init__(self, pad_id: int | None) -> None:
        self.pad_id = pad_id
        self.results: dict[str, dict[str, Any]] = {}
        self._start = 0.0
        self._rows: list[str] = []

    def eval_start(self, state: State, logger: Logger) -> None:
        del logger
        self._rows = []
        self.results[state.dataloader_label or "?"] = {
            "examples": 0,
            "batches": 0,
            "tokens": 0,
            "max_width": 0,
        }
        self._start = time.perf_counter()

    def eval_batch_start(self, state: State, logger: Logger) -> None:
        del logger
        batch = state.batch
        entry = self.results[state.dataloader_label or "?"]
        input_ids = batch["input_ids"]
        gold = batch.get("gold_indices")
        entry["examples"] += len(gold) if gold is not None else int(input_ids.shape[0])
        entry["batches"] += 1
        entry["tokens"] += int(input_ids.numel())
        entry["max_width"] = max(entry["max_width"], int(input_ids.shape[1]))
        for row in input_ids.tolist():
            while self.pad_id is not None and row and row[-1] == self.pad_id:
                row.pop()
            self._rows.append(hashlib.sha1(str(row).encode()).hexdigest())

    def eval_end(self, state: State, logger: Logger) -> None:
        del logger
        seconds = time.perf_counter() - self._start
        label = state.dataloader_label or "?"
        entry = self.results[label]
        entry["seconds"] = seconds
        entry["inputs_hash"] = hashlib.sha1("".join(sorted(self._rows)).encode()).hexdigest()
        entry["metrics"] = {
            name: float(metric.compute()) for name, metric in state.eval_metrics[label].items()
        }


def timed(record: dict[str, float], key: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` that adds its run time to ``record[key]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            record[key] = record.get(key, 0.0) + time.perf_counter() - start

    return wrapper


def probe_model(model: Any, tokenizer: Any) -> list[float]:
    """Log-probabilities of the last token of each probe text (a weights/kernels fingerprint)."""
    inner = getattr(model, "model", model)
    values = []
    with torch.no_grad():
        for text in PROBE_TEXTS:
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            logits = inner(input_ids=ids).logits[0, -2].float()
            values.append(float(torch.log_softmax(logits, -1)[ids[0, -1]]))
    return values


def install_hooks(
    eval_module: Any, times: dict[str, float], captured: dict[str, Any], pad_id: int | None
) -> None:
    """Wrap the eval module's builders and ``Trainer.eval`` (see the module docstring)."""
    eval_module.build_run_evaluators = timed(
        times, "build_run_evaluators", eval_module.build_run_evaluators
    )
    build_model = timed(times, "build_model", eval_module.build_composer_model_from_section)

    def capture_model(*args: Any, **kwargs: Any) -> Any:
        captured["model"] = build_model(*args, **kwargs)
        return captured["model"]

    eval_module.build_composer_model_from_section = capture_model
    original_eval = Trainer.eval

    def eval_with_timer(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        timer = EvaluatorTimer(pad_id)
        self.state.callbacks.append(timer)
        captured["threads_in_eval"] = torch.get_num_threads()
        try:
            return timed(times, "trainer_eval", original_eval)(self, *args, **kwargs)
        finally:
            self.state.callbacks.remove(timer)
            captured["evaluators"] = timer.results

    # For the rest of this process: the driver runs one evaluation, then exits.
    patch.object(Trainer, "eval", eval_with_timer).start()


def main(yaml_path: str, result_path: str, threads: int) -> None:
    """Evaluate ``yaml_path`` with this interpreter's ``llmfoundry`` and write ``result_path``."""
    began, wall = time.time(), time.perf_counter()
    torch.set_num_threads(threads)
    times: dict[str, float] = {}
    start = time.perf_counter()
    package = importlib.import_module("llmfoundry")
    eval_module = importlib.import_module("llmfoundry.command_utils.eval")
    times["import"] = time.perf_counter() - start
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    config: Any = OmegaConf.load(yaml_path)
    tokenizer = AutoTokenizer.from_pretrained(str(config.models[0].tokenizer.name))
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    captured: dict[str, Any] = {}
    install_hooks(eval_module, times, captured, pad_id)
    start = time.perf_counter()
    eval_module.eval_from_yaml(yaml_path, [])
    times["eval_from_yaml"] = time.perf_counter() - start
    probe = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in PROBE_TEXTS]
    import transformers

    result = {
        "llmfoundry_file": str(Path(package.__file__ or "").parent),
        "llmfoundry_version": str(getattr(package, "__version__", "?")),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": captured.get("threads_in_eval"),
        "tokenizer_probe": hashlib.sha1(str(probe).encode()).hexdigest(),
        "logprob_probe": probe_model(captured["model"], tokenizer),
        "times": {**times, "wall": time.perf_counter() - wall},
        "epochs": {"main_start": began, "main_end": time.time()},
        "evaluators": captured.get("evaluators", {}),
    }
    Path(result_path).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: <python> _bench_icl_driver.py <eval.yaml> <result.json> <threads>")
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
