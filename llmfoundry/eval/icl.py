"""Build Composer ``Evaluator``s from an ``icl_tasks`` config (a list of task sections or a YAML path).

A task section::

    - label: piqa
      dataset_uri: scripts/eval/local_data/multiple_choice/piqa_mini.jsonl
      num_fewshot: [0, 5]
      icl_task_type: multiple_choice
      continuation_delimiter: "\\nAnswer: "

gives one evaluator per shot count (and per ``category`` with ``has_categories: true``),
labelled ``piqa/0-shot``, ``piqa/5-shot`` (``piqa/<category>/0-shot``); Composer logs their
results as ``metrics/piqa/0-shot/InContextLearningMultipleChoiceAccuracy``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from composer.core import DataSpec, Evaluator
from composer.utils import dist
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.eval.datasets import (
    TASK_TYPE_ALIASES,
    ICLDataset,
    ICLRow,
    icl_num_samples,
    load_icl_rows,
    split_icl_batch,
)
from llmfoundry.eval.metrics import ICL_METRICS
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError, did_you_mean
from llmfoundry.utils.registry_utils import check_keys

__all__ = ["ICLTaskConfig", "build_icl_evaluators", "load_icl_task_sections"]

DEFAULT_METRICS = {
    "language_modeling": ["InContextLearningLMAccuracy"],
    "multiple_choice": ["InContextLearningMultipleChoiceAccuracy"],
    "schema": ["InContextLearningMultipleChoiceAccuracy"],
    "generation_task_with_answers": ["InContextLearningGenerationExactMatchAccuracy"],
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
    fewshot_random_seed: int = 1234
    has_categories: bool = False
    # generation tasks only (other task types ignore them, as LLM Foundry does)
    cot_delimiter: str = ""
    early_stopping_criteria: list[str] | None = None
    do_normalization: bool = True
    generation_kwargs: dict[str, Any] | None = None


_TASK_KEYS = {f.name for f in fields(ICLTaskConfig)}
_REQUIRED_KEYS = ("label", "dataset_uri", "icl_task_type")


def load_icl_task_sections(icl_tasks: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The task sections of ``icl_tasks``: the list itself, or the ``icl_tasks`` list of a YAML file.

    Raises:
        MissingFileError: if the YAML file does not exist.
        ConfigError: if it has no ``icl_tasks`` list, or an entry is not a mapping.
    """
    if isinstance(icl_tasks, str):
        path = Path(icl_tasks)
        if not path.is_file():
            raise MissingFileError(f"icl_tasks file '{icl_tasks}' does not exist")
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if not isinstance(loaded, dict) or not isinstance(loaded.get("icl_tasks"), list):
            raise ConfigError(f"icl_tasks file '{icl_tasks}' must hold a list under 'icl_tasks:'")
        icl_tasks = loaded["icl_tasks"]
    sections = []
    for index, section in enumerate(icl_tasks):
        if not isinstance(section, Mapping):
            raise ConfigError(f"icl_tasks[{index}] must be a mapping of task keys")
        sections.append({str(k): v for k, v in section.items()})
    return sections


def parse_task(index: int, section: Mapping[str, Any]) -> ICLTaskConfig:
    """Validate one task section into an ``ICLTaskConfig``.

    Raises:
        ConfigError: naming ``icl_tasks[i].key`` for an unknown key (with a close valid one), a
            missing required key, an unknown task type or metric, or a bad ``num_fewshot``.
    """
    where = f"icl_tasks[{index}]"
    if section.get("icl_task_type") == "code_evaluation":
        # Scoring code tasks means running model-written code, which needs a sandbox we do not
        # ship; say so before complaining about their keys (pass_at_k, ...).
        raise ConfigError(
            f"{where} ('{section.get('label')}'): icl_task_type 'code_evaluation' runs "
            "model-written code and is not supported (no sandbox); remove the task"
        )
    check_keys(section, _TASK_KEYS, where)
    for key in _REQUIRED_KEYS:
        if section.get(key) in (None, ""):
            raise ConfigError(f"{where}.{key} is missing")
    values = dict(section)
    task_type = TASK_TYPE_ALIASES.get(str(values["icl_task_type"]), str(values["icl_task_type"]))
    if task_type not in registry.icl_datasets:
        known = sorted(registry.icl_datasets.get_all())
        raise ConfigError(
            f"{where}.icl_task_type '{task_type}' is not a known task type"
            f"{did_you_mean(task_type, known)} (known: {', '.join(known)})"
        )
    values["icl_task_type"] = task_type
    shots = values.get("num_fewshot", [0])
    shots = [shots] if isinstance(shots, int) else list(shots)
    if not shots or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in shots
    ):
        raise ConfigError(
            f"{where}.num_fewshot must be a list of non-negative integers, got {shots!r}"
        )
    values["num_fewshot"] = shots
    for name in values.get("metric_names") or []:
        if name not in ICL_METRICS:
            raise ConfigError(
                f"{where}.metric_names: '{name}' is not an ICL metric"
                f"{did_you_mean(name, ICL_METRICS)} (known: {', '.join(sorted(ICL_METRICS))})"
            )
    return ICLTaskConfig(**values)


def _split_by_category(task: ICLTaskConfig, rows: list[ICLRow]) -> dict[str | None, list[ICLRow]]:
    if not task.has_categories:
        return {None: rows}
    groups: dict[str | None, list[ICLRow]] = {}
    for row in rows:
        category = row.fields.get("category")
        if not isinstance(category, str) or not category:
            raise DatasetError(
                f"{row.source}, row {row.line}: missing field 'category' (the task has has_categories: true)"
            )
        groups.setdefault(category, []).append(row)
    return groups


def _build_dataset(
    task: ICLTaskConfig,
    rows: list[ICLRow],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_len: int,
    num_fewshot: int,
) -> ICLDataset:
    dataset_cls = registry.icl_datasets.get(task.icl_task_type)
    common: dict[str, Any] = {
        "num_fewshot": num_fewshot,
        "prompt_string": task.prompt_string,
        "example_delimiter": task.example_delimiter,
        "continuation_delimiter": task.continuation_delimiter,
        "fewshot_random_seed": task.fewshot_random_seed,
    }
    if task.icl_task_type == "generation_task_with_answers":
        common.update(
            cot_delimiter=task.cot_delimiter,
            early_stopping_criteria=task.early_stopping_criteria,
            do_normalization=task.do_normalization,
            generation_kwargs=task.generation_kwargs,
        )
    dataset = dataset_cls(rows, tokenizer, max_seq_len, **common)
    if not isinstance(dataset, ICLDataset):
        raise TypeError(f"icl_datasets entry '{task.icl_task_type}' did not build an ICLDataset")
    return dataset


def build_icl_evaluators(
    icl_tasks: str | Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    default_max_seq_len: int,
    default_batch_size: int,
    icl_subset_num_batches: int | None = None,
) -> tuple[list[Evaluator], list[str]]:
    """One ``Evaluator`` per task, shot count (and category), plus the metric keys they log.

    Args:
        icl_tasks: the task sections, or the path of a YAML file with an ``icl_tasks`` list.
        tokenizer: the model's tokenizer.
        default_max_seq_len: a task's ``max_seq_len`` when it sets none.
        default_batch_size: a task's ``batch_size`` (questions per batch) when it sets none.
        icl_subset_num_batches: evaluate only this many batches of each evaluator.

    Returns:
        The evaluators (labels ``{label}/{k}-shot`` or ``{label}/{category}/{k}-shot``) and the
        logger keys of their results (``metrics/{evaluator label}/{MetricName}``).

    Raises:
        ConfigError: on an invalid task section (naming ``icl_tasks[i].key``).
        MissingFileError: if a ``dataset_uri`` or the tasks file does not exist.
        DatasetError: on bad rows (naming the file, row and field) or too few rows for a shot count.
    """
    evaluators: list[Evaluator] = []
    logger_keys: list[str] = []
    for index, section in enumerate(load_icl_task_sections(icl_tasks)):
        task = parse_task(index, section)
        if str(task.dataset_uri).startswith(("hf://", "s3://", "gs://", "oci://")):
            raise ConfigError(
                f"icl_tasks[{index}].dataset_uri '{task.dataset_uri}': only local JSONL files are "
                "supported; download the data and point dataset_uri at the file"
            )
        rows = load_icl_rows(task.dataset_uri)
        max_seq_len = task.max_seq_len or default_max_seq_len
        batch_size = task.batch_size or default_batch_size
        metric_names = list(task.metric_names or DEFAULT_METRICS[task.icl_task_type])
        for category, category_rows in _split_by_category(task, rows).items():
            for num_fewshot in task.num_fewshot:
                dataset = _build_dataset(task, category_rows, tokenizer, max_seq_len, num_fewshot)
                loader = DataLoader(
                    dataset,
                    batch_size=batch_size,
                    sampler=dist.get_sampler(dataset, shuffle=False, drop_last=False),
                    collate_fn=dataset.collate,
                    num_workers=0,
                )
                label = "/".join(
                    part for part in (task.label, category, f"{num_fewshot}-shot") if part
                )
                evaluators.append(
                    Evaluator(
                        label=label,
                        dataloader=DataSpec(
                            loader,
                            split_batch=split_icl_batch,
                            get_num_samples_in_batch=icl_num_samples,
                        ),
                        metric_names=metric_names,
                        subset_num_batches=icl_subset_num_batches,
                    )
                )
                logger_keys += [f"metrics/{label}/{name}" for name in metric_names]
    return evaluators, logger_keys
