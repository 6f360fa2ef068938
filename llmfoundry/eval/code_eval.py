"""``code_evaluation`` tasks: the model completes functions, which are run on test cases (pass@k).

Opt-in: a config must set ``allow_code_eval: true`` (see ``check_code_task``), since scoring
runs model-written code, in ``llmfoundry.eval.code_sandbox``. As in LLM Foundry (up to 0.8;
later versions dropped the task type), with Composer's batching:

* Rows have ``prompt`` (the code to complete), ``entry_point`` (the function to call),
  ``canonical_solution``, ``test_inputs`` / ``test_outputs`` (lists of source-code strings) and
  ``language`` (``python``, ``c++``, ``c`` or ``javascript``); other fields (``task_id``,
  ``test``) are not used.
* Rows are never stripped (whitespace matters in code; ``strip_dataset`` is ignored). A shot is
  ``example_delimiter`` (when text precedes it) + ``prelimiter`` + prompt +
  ``continuation_delimiter`` + canonical solution; the row's own context is the same without
  the solution, and is not right-stripped.
* Generation samples by default: ``do_sample=True, temperature=0.2, num_beams=1`` and
  ``max_new_tokens`` = min(longest canonical solution in tokens + 10, ``max_seq_len`` - longest
  prompt), at least 1; ``generation_kwargs`` override these. Each prompt gets
  ``generations_per_sample`` completions (``num_return_sequences``); ``batch_size`` counts
  completions, so a batch holds ``batch_size // generations_per_sample`` prompts (at least 1).
* A completion is cut before its first line that starts with a letter, digit, ``#`` or a
  backtick (the function has ended), appended to the row's ``prompt``, and passes when every
  test case passes (``code_sandbox.build_test_program``). pass@k is ``1 - C(n - c, k) /
  C(n, k)`` for ``c`` passing completions of ``n``, averaged over the rows. With several ``pass_at_k`` values the
  metric reports the first (LLM Foundry returned a dict of all of them, which Composer's loggers
  and the result tables here cannot take); ``pass_at_k_results`` gives them all.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.eval.code_sandbox import (
    LANGUAGE_TOOLS,
    SECONDS_PER_TEST,
    language_available,
    normalize_language,
    run_tests,
)
from llmfoundry.eval.datasets import (
    TASK_DATASETS,
    Example,
    ICLDataset,
    encode_unique,
    pad_sequences,
    require,
    require_strings,
)
from llmfoundry.eval.metrics import (
    ICL_METRICS,
    METRIC_ALIASES,
    InContextLearningMetric,
    require_batch_keys,
)
from llmfoundry.eval.sources import ICLRow
from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.exceptions import ConfigError, DatasetError

__all__ = [
    "CodeEvaluationDataset",
    "InContextLearningCodeEvalAccuracy",
    "check_code_task",
    "cut_code_generation",
    "pass_at_k",
]

logger = logging.getLogger(__name__)

# Room for a longer solution than the longest canonical one.
ANSWER_BUFFER_TOKENS = 10
_FUNCTION_END = re.compile(r"\n[A-Za-z0-9#`]")
_GENERATION_DEFAULTS = {"num_beams": 1, "do_sample": True, "temperature": 0.2, "use_cache": True}


def cut_code_generation(text: str) -> str:
    """A completion up to the first line that starts with a letter, digit, ``#`` or backtick."""
    return _FUNCTION_END.split(text, maxsplit=1)[0]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from ``c`` passing completions of ``n``: 1 - C(n-c,k)/C(n,k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def check_code_task(where: str, section: Mapping[str, Any], allow_code_eval: bool) -> None:
    """Refuse a code task unless ``allow_code_eval``; check its ``pass_at_k`` and
    ``generations_per_sample``; warn that model-written code will run.

    Raises:
        ConfigError: naming the task and the key.
    """
    label = section.get("label")
    if not allow_code_eval:
        raise ConfigError(
            f"{where} ('{label}'): icl_task_type 'code_evaluation' runs model-written code, which "
            "is not supported by default; set allow_code_eval: true at the top level of the "
            "config to run it in a sandboxed subprocess, or remove the task"
        )
    n = section.get("generations_per_sample", 1)
    check_value(n, PositiveInt, f"{where}.generations_per_sample")
    given = section.get("pass_at_k", 1)
    check_value(given, PositiveInt | list[PositiveInt], f"{where}.pass_at_k")
    ks = given if isinstance(given, list) else [given]
    if not ks:
        raise ConfigError(f"{where}.pass_at_k is an empty list; give at least one k, e.g. [1]")
    if max(ks) > n:
        raise ConfigError(
            f"{where}.pass_at_k={max(ks)} needs at least {max(ks)} completions per row; set "
            f"generations_per_sample >= {max(ks)} (it is {n})"
        )
    logger.warning(
        "%s ('%s'): allow_code_eval is set; code the model writes will be run in a sandboxed "
        "subprocess (llmfoundry.eval.code_sandbox)",
        where,
        label,
    )


# --- The dataset -----------------------------------------------------------------------------


class CodeEvaluationDataset(ICLDataset):
    """``code_evaluation`` rows (see the module docstring).

    Args:
        generations_per_sample: completions generated per row (``num_return_sequences``).
        pass_at_k: the k (or ks) of pass@k; the first is the metric's value.
        generation_kwargs: extra ``generate`` arguments (override the defaults).
        **kwargs: ``ICLDataset``'s arguments (``strip_dataset`` is ignored: code is not stripped).

    Raises:
        DatasetError: on a bad row, or a row whose language cannot run here.
        ConfigError: on ``generation_kwargs`` that cannot give ``generations_per_sample``
            completions per row.
    """

    task_keys = ("generations_per_sample", "pass_at_k", "generation_kwargs")
    context_key = "prompt"

    def __init__(
        self,
        rows: Sequence[ICLRow],
        tokenizer: PreTrainedTokenizerBase,
        max_seq_len: int,
        generations_per_sample: int = 1,
        pass_at_k: int | Sequence[int] = 1,
        generation_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["strip_dataset"] = False
        super().__init__(rows, tokenizer, max_seq_len, **kwargs)
        self.generations_per_sample = generations_per_sample
        self.pass_at_k = [pass_at_k] if isinstance(pass_at_k, int) else list(pass_at_k)
        self.prompts = self._encode()
        self.generation_kwargs = self._generation_kwargs(dict(generation_kwargs or {}))

    def parse_row(self, row: ICLRow, fields: dict[str, Any]) -> Example:
        """``prompt``, ``entry_point``, ``canonical_solution``, ``language`` strings and equally
        long, non-empty ``test_inputs`` / ``test_outputs`` lists of strings."""
        for name in ("prompt", "entry_point", "canonical_solution", "language"):
            require(row, fields, name, str)
        inputs = require_strings(row, fields, "test_inputs")
        outputs = require_strings(row, fields, "test_outputs")
        if len(inputs) != len(outputs):
            raise DatasetError(
                f"{row.where('test_outputs')}: {len(outputs)} outputs for {len(inputs)} "
                "test_inputs; give one expected output per input"
            )
        language = normalize_language(fields["language"])
        if language is None:
            raise DatasetError(
                f"{row.where('language')}: unknown language '{fields['language']}' "
                f"(supported: {', '.join(LANGUAGE_TOOLS)})"
            )
        if not language_available(language):
            raise DatasetError(
                f"{row.where('language')}: {language} code needs '{LANGUAGE_TOOLS[language]}' "
                "on PATH, which is not installed here; install it or remove the task's "
                f"{language} rows"
            )
        fields["language"] = language
        return Example(fields)

    def shot_answer(self, example: Example) -> str:
        """The canonical solution."""
        return example.fields["canonical_solution"]

    def scored_texts(self, example: Example) -> list[str]:
        """The canonical solution."""
        return [example.fields["canonical_solution"]]

    def _encode(self) -> list[list[int]]:
        return self.encode_prompts(self.max_seq_len)

    def _generation_kwargs(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """LLM Foundry's sampling defaults and token budget, then the task's overrides."""
        # LLM Foundry measures prompts without their pad tokens.
        longest_prompt = max(
            (sum(1 for t in p if t != self.pad_token_id) for p in self.prompts), default=0
        )
        solutions = [e.fields["canonical_solution"] for e in self.examples]
        encoded = encode_unique(self.tokenizer, solutions, add_special_tokens=False)
        longest_answer = max((len(ids) for ids in encoded), default=0) + ANSWER_BUFFER_TOKENS
        n = self.generations_per_sample
        if overrides.get("num_return_sequences", n) != n:
            raise ConfigError(
                f"{self._source()}: generation_kwargs.num_return_sequences="
                f"{overrides['num_return_sequences']} differs from generations_per_sample={n}; "
                "set generations_per_sample instead"
            )
        kwargs = {
            "pad_token_id": self.pad_token_id,
            **_GENERATION_DEFAULTS,
            "eos_token_id": self.tokenizer.eos_token_id,
            "max_new_tokens": max(min(longest_answer, self.max_seq_len - longest_prompt), 1),
            **overrides,
            "num_return_sequences": n,
        }
        if n > 1 and not kwargs.get("do_sample") and n > int(kwargs.get("num_beams") or 1):
            raise ConfigError(
                f"{self._source()}: generations_per_sample={n} needs sampling "
                "(generation_kwargs.do_sample: true) or num_beams >= generations_per_sample"
            )
        return kwargs

    def _source(self) -> str:
        return self.rows[0].source if self.rows else "code_evaluation task"

    def loader_batch_size(self, batch_size: int) -> int:
        """Rows per batch: ``batch_size`` counts completions, ``generations_per_sample`` per row."""
        return max(1, batch_size // self.generations_per_sample)

    def item(self, index: int) -> dict[str, Any]:
        return {"prompt": self.prompts[index], "fields": self.examples[index].fields}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Left-padded prompts, what the metric needs per row, and the generation settings."""
        input_ids = pad_sequences([item["prompt"] for item in items], self.pad_token_id, left=True)
        fields = [item["fields"] for item in items]
        return {
            "mode": "generate",
            "input_ids": input_ids,
            "attention_mask": input_ids != self.pad_token_id,
            "labels": [f["canonical_solution"] for f in fields],
            "prompts": [f["prompt"] for f in fields],
            "entry_points": [f["entry_point"] for f in fields],
            "test_inputs": [list(f["test_inputs"]) for f in fields],
            "test_outputs": [list(f["test_outputs"]) for f in fields],
            "languages": [f["language"] for f in fields],
            "pass_at_k": list(self.pass_at_k),
            "generations_per_sample": self.generations_per_sample,
            "generation_kwargs": dict(self.generation_kwargs),
        }


# --- The metric ------------------------------------------------------------------------------

_BATCH_KEYS = (
    "prompts",
    "entry_points",
    "test_inputs",
    "test_outputs",
    "languages",
    "pass_at_k",
    "generations_per_sample",
)


class InContextLearningCodeEvalAccuracy(InContextLearningMetric):
    """pass@k of ``code_evaluation`` tasks, averaged over rows (the first of the task's k).

    ``outputs`` hold ``generations_per_sample`` completions per row, row after row (how
    ``generate`` returns ``num_return_sequences``). Each is cut (``cut_code_generation``),
    appended to the row's prompt and run on the row's tests in the sandbox, several at a time.
    ``pass_at_k_results`` gives pass@k for every k.

    Args:
        dist_sync_on_step: synchronize the states on every ``forward``.
        seconds_per_test: time limit of each test case.
    """

    def __init__(
        self, dist_sync_on_step: bool = False, seconds_per_test: float = SECONDS_PER_TEST
    ) -> None:
        super().__init__(dist_sync_on_step=dist_sync_on_step)
        self.seconds_per_test = seconds_per_test
        self.pass_at_k: list[int] = []
        # One (n, c) row per sample, for pass@k at any k.
        self.add_state("counts", default=[], dist_reduce_fx="cat")

    def update(self, batch: Mapping[str, Any], outputs: Sequence[str], labels: Any) -> None:
        """Run every completion's tests and add each row's pass@k."""
        del labels  # the canonical solutions; not needed
        require_batch_keys(batch, _BATCH_KEYS, type(self).__name__)
        n, rows = int(batch["generations_per_sample"]), len(batch["prompts"])
        if len(outputs) != rows * n:
            raise ValueError(
                f"{type(self).__name__}: expected {n} completions for each of {rows} rows, got "
                f"{len(outputs)}"
            )
        self.pass_at_k = [int(k) for k in batch["pass_at_k"]]
        jobs = [
            (
                batch["languages"][row],
                batch["prompts"][row] + cut_code_generation(outputs[row * n + j]),
                batch["entry_points"][row],
                batch["test_inputs"][row],
                batch["test_outputs"][row],
                self.seconds_per_test,
            )
            for row in range(rows)
            for j in range(n)
        ]
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = max(1, min(len(jobs), cpus or 1, 8))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            passed = list(pool.map(lambda job: run_tests(*job), jobs))
        correct, device = 0.0, cast(torch.Tensor, self.correct).device
        for row in range(rows):
            c = sum(passed[row * n : (row + 1) * n])
            correct += pass_at_k(n, c, self.pass_at_k[0])
            counts = torch.tensor([[n, c]], dtype=torch.long, device=device)
            cast(list, self.counts).append(counts)
        self.correct = cast(torch.Tensor, self.correct) + correct
        self.total = cast(torch.Tensor, self.total) + rows

    def pass_at_k_results(self, ks: Sequence[int] | None = None) -> dict[str, float]:
        """``{"pass@k": value}`` for each k (default: the task's), over the rows seen so far."""
        counts: Any = self.counts  # a list of (1, 2) tensors, or one tensor once synced
        if isinstance(counts, list):
            counts = torch.cat(counts) if counts else torch.zeros((0, 2), dtype=torch.long)
        pairs = counts.tolist()
        return {
            f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in pairs) / max(len(pairs), 1)
            for k in (ks or self.pass_at_k or [1])
        }

    def compute(self) -> torch.Tensor:
        """pass@k for the task's first k; the others are logged."""
        if len(self.pass_at_k) > 1:
            results = self.pass_at_k_results()
            logger.info("code eval: %s", ", ".join(f"{k}={v:.4f}" for k, v in results.items()))
        return super().compute()


registry.icl_datasets.register("code_evaluation", func=CodeEvaluationDataset)
TASK_DATASETS["code_evaluation"] = CodeEvaluationDataset
ICL_METRICS[InContextLearningCodeEvalAccuracy.__name__] = InContextLearningCodeEvalAccuracy
METRIC_ALIASES["code_eval_accuracy"] = InContextLearningCodeEvalAccuracy.__name__
registry.metrics.register(
    InContextLearningCodeEvalAccuracy.__name__, func=InContextLearningCodeEvalAccuracy
)
registry.metrics.register("code_eval_accuracy", func=InContextLearningCodeEvalAccuracy)
