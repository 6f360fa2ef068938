"""Build Composer ``Evaluator``s from an ``icl_tasks`` config (a list of task sections or a YAML path).

A task section (LLM Foundry's keys)::

    - label: piqa
      dataset_uri: eval/local_data/commonsense_reasoning/piqa.jsonl
      num_fewshot: [0, 5]
      icl_task_type: multiple_choice
      continuation_delimiter: "\\nAnswer: "

gives one evaluator per shot count (and per ``category`` with ``has_categories: true``),
labelled ``piqa/0-shot``, ``piqa/5-shot`` (``mmlu/5-shot/<category>``); Composer logs their
results as ``metrics/piqa/0-shot/InContextLearningMultipleChoiceAccuracy``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from composer.core import DataSpec, Evaluator
from composer.utils import dist
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

import llmfoundry.eval.generation  # noqa: F401  (registers generation_task_with_answers)
from llmfoundry import registry
from llmfoundry.eval.code_eval import check_code_task
from llmfoundry.eval.datasets import (
    TASK_TYPE_ALIASES,
    ICLDataset,
    icl_num_samples,
    split_icl_batch,
)
from llmfoundry.eval.metrics import ICL_METRICS, METRIC_ALIASES
from llmfoundry.eval.row_fields import check_row_field_keys, renamed_rows
from llmfoundry.eval.sources import ICLRow, read_task_rows, resolve_relative, split_by_category
from llmfoundry.utils.exceptions import ConfigError, MissingFileError, did_you_mean
from llmfoundry.utils.generate_options import INPUT_KWARGS, check_generate_kwargs
from llmfoundry.utils.registry_utils import check_keys

__all__ = ["ICLTaskConfig", "build_icl_evaluators", "load_icl_task_sections", "parse_task"]

logger = logging.getLogger(__name__)

DEFAULT_METRICS = {
    "language_modeling": ["InContextLearningLMAccuracy"],
    "multiple_choice": ["InContextLearningMultipleChoiceAccuracy"],
    "schema": ["InContextLearningMultipleChoiceAccuracy"],
    "generation_task_with_answers": ["InContextLearningGenerationExactMatchAccuracy"],
    "code_evaluation": ["InContextLearningCodeEvalAccuracy"],
}


@dataclass
class ICLTaskConfig:
    """One ``icl_tasks`` entry; the field names are the YAML keys (LLM Foundry's)."""

    label: str
    dataset_uri: str
    icl_task_type: str
    num_fewshot: list[int] = field(default_factory=lambda: [0])
    batch_size: int | None = None
    max_seq_len: int | None = None
    metric_names: list[str] | None = None
    prompt_string: str = ""
    example_delimiter: str = "\n"
    continuation_delimiter: str = " "
    prelimiter: str = ""
    fewshot_random_seed: int = 1234
    has_categories: bool = False
    strip_dataset: bool = True
    pad_tok_id: int | None = None
    hf_loading_vars: dict[str, Any] | None = None
    hf_parsing_map: dict[str, list[str]] | None = None
    # the row field read in place of the usual one (``eval.row_fields``)
    context_key: str | None = None
    answer_key: str | None = None
    choices_key: str | None = None
    # generation tasks only (other task types ignore them, as LLM Foundry does)
    cot_delimiter: str = ""
    early_stopping_criteria: list[str] | None = None
    do_normalization: bool = True
    generation_kwargs: dict[str, Any] | None = None
    # code_evaluation tasks only (they take generation_kwargs too)
    pass_at_k: int | list[int] = 1
    generations_per_sample: int = 1


_TASK_KEYS = {f.name for f in fields(ICLTaskConfig)} | {"question_prelimiter"}
_REQUIRED_KEYS = ("label", "dataset_uri", "icl_task_type")
_GENERATION_KEYS = (
    "cot_delimiter",
    "early_stopping_criteria",
    "do_normalization",
    "generation_kwargs",
)


def load_icl_task_sections(
    icl_tasks: str | Sequence[Mapping[str, Any]], anchors: Sequence[Path] = ()
) -> tuple[list[dict[str, Any]], list[Path]]:
    """The task sections of ``icl_tasks`` and the folders their relative paths may be relative to.

    ``icl_tasks`` is the list itself, or the path of a YAML file with an ``icl_tasks`` list
    (looked up in the working directory, then in ``anchors`` and the folders above them).

    Raises:
        MissingFileError: if the YAML file does not exist.
        ConfigError: if it has no ``icl_tasks`` list, or an entry is not a mapping.
    """
    anchors = list(anchors)
    if isinstance(icl_tasks, str):
        path = resolve_relative(icl_tasks, anchors)
        if path is None:
            raise MissingFileError(
                f"icl_tasks file '{icl_tasks}' does not exist (looked in the working directory "
                "and the run YAML's folders)"
            )
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if not isinstance(loaded, dict) or not isinstance(loaded.get("icl_tasks"), list):
            raise ConfigError(f"icl_tasks file '{icl_tasks}' must hold a list under 'icl_tasks:'")
        icl_tasks = loaded["icl_tasks"]
        anchors = [path.resolve().parent, *anchors]
    sections = []
    for index, section in enumerate(icl_tasks):
        if not isinstance(section, Mapping):
            raise ConfigError(f"icl_tasks[{index}] must be a mapping of task keys")
        sections.append({str(k): v for k, v in section.items()})
    return sections, anchors


def _metric_names(where: str, names: Sequence[str]) -> list[str]:
    """Metric class names for ``metric_names`` given as class names or LLM Foundry's short names."""
    resolved = []
    for name in names:
        name = METRIC_ALIASES.get(name, name)
        if name not in ICL_METRICS:
            known = sorted([*ICL_METRICS, *METRIC_ALIASES])
            raise ConfigError(
                f"{where}.metric_names: '{name}' is not an ICL metric"
                f"{did_you_mean(name, known)} (known: {', '.join(known)})"
            )
        resolved.append(name)
    return resolved


def _check_task_type(where: str, values: dict[str, Any]) -> str:
    task_type = TASK_TYPE_ALIASES.get(str(values["icl_task_type"]), str(values["icl_task_type"]))
    if task_type not in registry.icl_datasets:
        known = sorted(registry.icl_datasets.get_all())
        raise ConfigError(
            f"{where}.icl_task_type '{task_type}' is not a known task type"
            f"{did_you_mean(task_type, known)} (known: {', '.join(known)})"
        )
    return task_type


def parse_task(
    index: int, section: Mapping[str, Any], allow_code_eval: bool = False
) -> ICLTaskConfig:
    """Validate one task section into an ``ICLTaskConfig``.

    ``code_evaluation`` tasks run model-written code and are refused unless ``allow_code_eval``.

    Raises:
        ConfigError: naming ``icl_tasks[i].key`` for an unknown key (with a close valid one), a
            missing required key, an unknown task type or metric, or a bad ``num_fewshot``; or
            naming the task for a code task without ``allow_code_eval``.
    """
    where = f"icl_tasks[{index}]"
    if section.get("icl_task_type") == "code_evaluation":
        check_code_task(where, section, allow_code_eval)
    if "num_beams" in section:
        raise ConfigError(f"{where}.num_beams is not a task key; use generation_kwargs.num_beams")
    check_keys(section, _TASK_KEYS, where)
    for key in _REQUIRED_KEYS:
        if section.get(key) in (None, ""):
            raise ConfigError(f"{where}.{key} is missing")
    values = dict(section)
    if "question_prelimiter" in values:
        if "prelimiter" in values:
            raise ConfigError(
                f"{where} sets both prelimiter and question_prelimiter (the same key); keep one"
            )
        values["prelimiter"] = values.pop("question_prelimiter")
    values["icl_task_type"] = _check_task_type(where, values)
    check_row_field_keys(where, values["icl_task_type"], values)
    shots = values.get("num_fewshot", [0])
    shots = [shots] if isinstance(shots, int) else list(shots)
    if not shots or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in shots
    ):
        raise ConfigError(
            f"{where}.num_fewshot must be a list of non-negative integers, got {shots!r}"
        )
    values["num_fewshot"] = shots
    if values.get("metric_names") is not None:
        values["metric_names"] = _metric_names(where, values["metric_names"])
    if isinstance(values.get("generation_kwargs"), Mapping):
        # A code task makes generations_per_sample sequences per prompt; others make one.
        per_prompt = (
            set() if values["icl_task_type"] == "code_evaluation" else {"num_return_sequences"}
        )
        check_generate_kwargs(
            values["generation_kwargs"], f"{where}.generation_kwargs", INPUT_KWARGS | per_prompt
        )
    return ICLTaskConfig(**values)


def _build_dataset(
    task: ICLTaskConfig,
    rows: list[ICLRow],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_len: int,
    num_fewshot: int,
) -> ICLDataset:
    dataset_cls: Callable[..., Any] = registry.icl_datasets.get(task.icl_task_type)
    # The task-type keys a dataset class takes beyond the common ones (``task_keys``).
    extra_keys: tuple[str, ...] = getattr(dataset_cls, "task_keys", ())
    kwargs: dict[str, Any] = {
        "pad_tok_id": task.pad_tok_id,
        "num_fewshot": num_fewshot,
        "fewshot_random_seed": task.fewshot_random_seed,
        "prompt_string": task.prompt_string,
        "example_delimiter": task.example_delimiter,
        "continuation_delimiter": task.continuation_delimiter,
        "prelimiter": task.prelimiter,
        "strip_dataset": task.strip_dataset,
    }
    kwargs.update({key: getattr(task, key) for key in extra_keys})
    dataset = dataset_cls(rows, tokenizer, max_seq_len, **kwargs)
    if not isinstance(dataset, ICLDataset):
        raise TypeError(f"icl_datasets entry '{task.icl_task_type}' did not build an ICLDataset")
    return dataset


def _data_spec(dataset: ICLDataset, batch_size: int, subset_num_batches: int | None) -> DataSpec:
    """The loader of one evaluator; log-likelihood rows are served longest first."""
    per_batch = dataset.loader_batch_size(batch_size)
    lengths = dataset.lengths()
    if lengths is not None:
        # Keep a subset of batches on the same rows as in file order (LLM Foundry's subset).
        keep = None
        if subset_num_batches is not None and subset_num_batches > 0:
            keep = subset_num_batches * per_batch * dist.get_world_size()
        dataset.sort_by_length(lengths, keep_first=keep)
    loader = DataLoader(
        dataset,
        batch_size=per_batch,
        sampler=dist.get_sampler(dataset, shuffle=False, drop_last=False),
        collate_fn=dataset.collate,
        num_workers=0,
    )
    return DataSpec(loader, split_batch=split_icl_batch, get_num_samples_in_batch=icl_num_samples)


def build_icl_evaluators(
    icl_tasks: str | Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    default_max_seq_len: int,
    default_batch_size: int,
    icl_subset_num_batches: int | None = None,
    anchors: Sequence[Path] = (),
    allow_code_eval: bool = False,
) -> tuple[list[Evaluator], list[str]]:
    """One ``Evaluator`` per task, shot count (and category), plus the metric keys they log.

    Args:
        icl_tasks: the task sections, or the path of a YAML file with an ``icl_tasks`` list.
        tokenizer: the model's tokenizer.
        default_max_seq_len: a task's ``max_seq_len`` when it sets none.
        default_batch_size: a task's ``batch_size`` when it sets none (rows per batch;
            multiple-choice batches hold ``batch_size // choices`` questions, as in LLM Foundry).
        icl_subset_num_batches: evaluate only this many batches of each evaluator (not of
            tasks split by category, as in LLM Foundry).
        anchors: folders (the run YAML's) that relative paths may be relative to, after the
            working directory.
        allow_code_eval: run ``code_evaluation`` tasks (model-written code, in a sandboxed
            subprocess); without it they are refused.

    Returns:
        The evaluators (labels ``{label}/{k}-shot`` or ``{label}/{k}-shot/{category}``) and the
        logger keys of their results (``metrics/{evaluator label}/{MetricName}``).

    Raises:
        ConfigError: on an invalid task section (naming ``icl_tasks[i].key``).
        MissingFileError: if a ``dataset_uri`` or the tasks file does not exist.
        DatasetError: on bad rows (naming the file, row and field).
    """
    evaluators: list[Evaluator] = []
    logger_keys: list[str] = []
    sections, anchors = load_icl_task_sections(icl_tasks, anchors)
    rows_cache: dict[tuple[str, str, str], list[ICLRow]] = {}
    for index, section in enumerate(sections):
        task = parse_task(index, section, allow_code_eval)
        cache_key = (task.dataset_uri, repr(task.hf_loading_vars), repr(task.hf_parsing_map))
        if cache_key not in rows_cache:
            rows_cache[cache_key] = read_task_rows(
                task.dataset_uri, task.label, anchors, task.hf_loading_vars, task.hf_parsing_map
            )
        rows = renamed_rows(task.icl_task_type, vars(task), rows_cache[cache_key])
        groups = split_by_category(rows) if task.has_categories else {"": rows}
        metric_names = list(task.metric_names or DEFAULT_METRICS[task.icl_task_type])
        # As in LLM Foundry, icl_subset_num_batches does not apply to a task split by category
        # (its evaluators fall back to the run's eval_subset_num_batches).
        subset = None if task.has_categories else icl_subset_num_batches
        for num_fewshot in task.num_fewshot:
            for category, category_rows in groups.items():
                dataset = _build_dataset(
                    task,
                    category_rows,
                    tokenizer,
                    task.max_seq_len or default_max_seq_len,
                    num_fewshot,
                )
                label = "/".join(p for p in (task.label, f"{num_fewshot}-shot", category) if p)
                spec = _data_spec(dataset, task.batch_size or default_batch_size, subset)
                evaluators.append(
                    Evaluator(
                        label=label,
                        dataloader=spec,
                        metric_names=metric_names,
                        subset_num_batches=subset,
                    )
                )
                logger_keys += [f"metrics/{label}/{name}" for name in metric_names]
    return evaluators, logger_keys
