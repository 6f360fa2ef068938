"""The evaluators of a train or eval run: eval loaders, in-context-learning tasks and the gauntlet.

Shared by the train and eval commands: ``build_run_evaluators`` turns ``eval_loader`` /
``eval_loaders`` / ``icl_tasks`` into Composer ``Evaluator``s and ``build_gauntlet`` turns
``eval_gauntlet`` into the callback that scores each evaluation round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from composer import Evaluator

from llmfoundry.callbacks.eval_gauntlet_callback import EvalGauntlet
from llmfoundry.callbacks.eval_gauntlet_config import GauntletConfig, load_gauntlet_config
from llmfoundry.eval import InContextLearningMetric, build_icl_evaluators
from llmfoundry.eval.sources import resolve_config_file
from llmfoundry.utils.builders import build_dataloader_from_section
from llmfoundry.utils.config_utils import EvalConfig, TrainConfig
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.run_configs import path_anchors


def eval_loader_sections(
    eval_loader: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    eval_loaders: Sequence[Mapping[str, Any]] | None,
) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(evaluator label, key path, loader section)`` of ``eval_loader`` (label ``eval``) and of
    each labelled ``eval_loaders`` entry (``eval/<label>``); LLM Foundry also takes the labelled
    list under ``eval_loader``.

    Raises:
        ConfigError: if both are set, or a listed entry has no unique ``label``.
    """
    if eval_loader is not None and eval_loaders is not None:
        raise ConfigError("set eval_loader or eval_loaders (a list with labels), not both")
    sections: list[tuple[str, str, Mapping[str, Any]]] = []
    listed, list_key = eval_loaders, "eval_loaders"
    if isinstance(eval_loader, Mapping):
        sections.append(("eval", "eval_loader", eval_loader))
    elif eval_loader is not None:
        listed, list_key = eval_loader, "eval_loader"
    for index, section in enumerate(listed or ()):
        label = section.get("label")
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{list_key}[{index}].label is missing; name each eval loader")
        if any(f"eval/{label}" == existing for existing, _, _ in sections):
            raise ConfigError(f"{list_key}[{index}].label '{label}' is used twice")
        loader = {k: v for k, v in section.items() if k != "label"}
        sections.append((f"eval/{label}", f"{list_key}[{index}]", loader))
    return sections


def loader_evaluators(
    sections: list[tuple[str, str, Mapping[str, Any]]],
    tokenizer: Any,
    device_eval_batch_size: int,
    metric_names: list[str] | None = None,
) -> list[Evaluator]:
    """One evaluator per :func:`eval_loader_sections` entry, scoring ``metric_names`` (all the
    model's eval metrics when None)."""
    return [
        Evaluator(
            label=label,
            dataloader=build_dataloader_from_section(
                key, section, tokenizer, device_eval_batch_size
            ),
            metric_names=metric_names,
        )
        for label, key, section in sections
    ]


def build_run_evaluators(
    cfg: TrainConfig | EvalConfig, tokenizer: Any, model: Any, device_eval_batch_size: int
) -> list[Evaluator]:
    """The evaluators of a run's ``eval_loader``/``eval_loaders`` (see
    :func:`eval_loader_sections`) and of ``icl_tasks`` (``icl_tasks_str``): one per task and
    shot count, at ``icl_seq_len`` (else ``max_seq_len``) with ``device_eval_batch_size``
    questions per batch. Shared by the train and eval commands.
    """
    # The in-context-learning metrics score only the ICL evaluators' batches.
    metric_names = sorted(
        name
        for name, metric in model.get_metrics(is_train=False).items()
        if not isinstance(metric, InContextLearningMetric)
    )
    sections = eval_loader_sections(cfg.eval_loader, cfg.eval_loaders)
    evaluators = loader_evaluators(sections, tokenizer, device_eval_batch_size, metric_names)
    icl_tasks = cfg.icl_tasks or cfg.icl_tasks_str
    if icl_tasks:
        icl_evaluators, _ = build_icl_evaluators(
            icl_tasks,
            tokenizer,
            default_max_seq_len=getattr(cfg, "icl_seq_len", None) or cfg.max_seq_len,
            default_batch_size=device_eval_batch_size,
            icl_subset_num_batches=cfg.icl_subset_num_batches,
            anchors=path_anchors(cfg),
            allow_code_eval=cfg.allow_code_eval,
        )
        evaluators += icl_evaluators
    return evaluators


def build_evaluators(
    eval_loader_config: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    icl_tasks_config: str | Sequence[Mapping[str, Any]] | None,
    eval_gauntlet_config: str | Mapping[str, Any] | None,
    *,
    tokenizer: Any,
    device_eval_batch_size: int,
    icl_seq_len: int,
    icl_subset_num_batches: int | None = None,
) -> tuple[list[Evaluator], list[str], EvalGauntlet | None]:
    """LLM Foundry's call shape: evaluators from the config sections themselves.

    Returns:
        The eval-loader evaluators (each scoring every metric the model has for them) followed
        by the ICL ones, the ICL metric keys they log, and the gauntlet callback (or None).
    """
    sections = eval_loader_sections(eval_loader_config, None)
    evaluators = loader_evaluators(sections, tokenizer, device_eval_batch_size)
    logger_keys: list[str] = []
    gauntlet = None
    if icl_tasks_config is not None:
        icl_evaluators, logger_keys, gauntlet = build_icl_data_and_gauntlet(
            icl_tasks_config,
            eval_gauntlet_config,
            tokenizer,
            device_eval_batch_size,
            icl_seq_len,
            icl_subset_num_batches,
        )
        evaluators += icl_evaluators
    return evaluators, logger_keys, gauntlet


def build_icl_data_and_gauntlet(
    icl_tasks_config: str | Sequence[Mapping[str, Any]],
    eval_gauntlet_config: str | Mapping[str, Any] | None,
    tokenizer: Any,
    device_eval_batch_size: int,
    icl_seq_len: int,
    icl_subset_num_batches: int | None = None,
) -> tuple[list[Evaluator], list[str], EvalGauntlet | None]:
    """The ICL evaluators, their metric keys and the gauntlet callback scoring them (or None)."""
    evaluators, logger_keys = build_icl_evaluators(
        icl_tasks_config,
        tokenizer,
        default_max_seq_len=icl_seq_len,
        default_batch_size=device_eval_batch_size,
        icl_subset_num_batches=icl_subset_num_batches,
    )
    gauntlet = None
    if eval_gauntlet_config:
        gauntlet = EvalGauntlet.from_config(resolve_config_file(eval_gauntlet_config, []))
    return evaluators, logger_keys, gauntlet


def gauntlet_config(cfg: TrainConfig | EvalConfig) -> GauntletConfig | None:
    """The run's ``eval_gauntlet`` (a section or a YAML path), read and checked; None without one.
    The config check calls this before anything is built, and the command again to build the
    callback (:func:`build_gauntlet`).

    Raises:
        ConfigError: on a gauntlet without ``icl_tasks`` to score, or a bad gauntlet config
            (naming the key, ``eval_gauntlet.categories[0].benchmarks[1].random_baseline``).
        MissingFileError: on a gauntlet YAML path that does not exist.
    """
    gauntlet = cfg.eval_gauntlet or cfg.eval_gauntlet_str
    if not gauntlet:
        return None
    if not (cfg.icl_tasks or cfg.icl_tasks_str):
        raise ConfigError(
            "eval_gauntlet scores icl_tasks benchmarks, but the run has no icl_tasks; add "
            "icl_tasks (a list or a YAML path) or remove eval_gauntlet"
        )
    return load_gauntlet_config(resolve_config_file(gauntlet, path_anchors(cfg)))


def build_gauntlet(config: GauntletConfig | None) -> list[EvalGauntlet]:
    """The gauntlet (from :func:`gauntlet_config`) as a callback scoring each eval round; none
    without one."""
    return [] if config is None else [EvalGauntlet.from_config(config)]
