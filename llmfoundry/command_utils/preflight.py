"""Check a whole run config before anything is built: no tokenizer, model, data, folder or
process group exists until every section has passed.

Each ``{name: ..., **kwargs}`` section is checked against its registry entry's signature
(:mod:`llmfoundry.utils.config_checks`), so a typo or a value of the wrong type fails in one
line naming its full key path (``optimizer.lr``, ``callbacks.speed_monitor.window_size``,
``model.attn_config.qk_ln``). An MPT ``model:`` section is checked against the types of
``MPTConfig`` and its nested configs, then built as an ``MPTConfig`` (cheap: no weights), which
checks the shapes and the layer names. ``profiler`` is checked against Composer's
``Profiler``, ``cyclic_schedule`` and ``JSONTraceHandler``, ``compile_config`` against
``torch.compile``, ``tp_config`` against ``TPConfig`` and each ``icl_tasks`` entry against
``ICLTaskConfig`` (its types here, then its keys, task type and metrics by ``parse_task``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import torch
from composer.profiler import JSONTraceHandler, Profiler, cyclic_schedule
from composer.utils.parallelism import FSDPConfig, TPConfig

from llmfoundry import registry
from llmfoundry.command_utils.evaluators import eval_loader_sections, gauntlet_config
from llmfoundry.command_utils.parallelism import check_fsdp_config, check_tp_config
from llmfoundry.data.contrastive_pairs import build_pairs_dataloader, check_pairs_dataset
from llmfoundry.data.finetuning.dataloader import build_finetuning_dataloader
from llmfoundry.data.finetuning.dataset_config import parse_dataset_config
from llmfoundry.data.mds_dataset import check_dataset_options
from llmfoundry.data.text_data import (
    StreamingTextDataset,
    build_text_dataloader,
    dataset_section_keys,
)
from llmfoundry.eval.icl import ICLTaskConfig, load_icl_task_sections, parse_task
from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM, build_mpt_config
from llmfoundry.models.mpt import MPTConfig
from llmfoundry.models.mpt.config_defaults import (
    ATTN_CONFIG_TYPES,
    FFN_CONFIG_TYPES,
    INIT_CONFIG_TYPES,
)
from llmfoundry.utils.config_checks import (
    NON_NEGATIVE,
    POSITIVE,
    AllOrCount,
    PositiveInt,
    Schema,
    check_fields,
    check_value,
    declared_hints,
    parameter_hints,
)
from llmfoundry.utils.config_components import (
    check_call_keys,
    check_call_kwargs,
    check_component,
    check_named_components,
)
from llmfoundry.utils.config_utils import EvalConfig, TrainConfig
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.file_utils import check_output_folder
from llmfoundry.utils.run_configs import path_anchors

logger = logging.getLogger(__name__)

__all__ = [
    "check_eval_sections",
    "check_icl_tasks",
    "check_loader_section",
    "check_model_section",
    "check_named_sections",
    "check_parallelism",
    "check_profiler_section",
    "check_tokenizer_section",
    "check_train_config",
]

_NESTED_MPT_TYPES = {
    "attn_config": ATTN_CONFIG_TYPES,
    "ffn_config": FFN_CONFIG_TYPES,
    "init_config": INIT_CONFIG_TYPES,
}


class TokenizerKwargs(TypedDict, total=False):
    """The ``tokenizer.kwargs`` the config check knows; any other goes to ``from_pretrained``
    unchecked."""

    model_max_length: PositiveInt
    padding_side: Literal["left", "right"]
    truncation_side: Literal["left", "right"]
    trust_remote_code: bool
    use_fast: bool
    add_bos_token: bool
    add_eos_token: bool


_TOKENIZER_TYPES: dict[str, Any] = {"name": str, "kwargs": dict[str, Any] | None}
_TOKENIZER_KWARGS = Schema(TokenizerKwargs, open_keys=True)
_COMPILE_SCOPES = ("model", "blocks")


def _mpt_hints() -> dict[str, Any]:
    """``MPTConfig``'s keyword arguments and their annotations."""
    hints = parameter_hints(MPTConfig)
    return {k: v for k, v in hints.items() if k not in ("return", "kwargs", "layer_sources")}


def check_model_section(section: Any, path: str = "model") -> MPTConfig | None:
    """Check a ``model:`` section without building the model.

    Returns:
        The model's ``MPTConfig`` for an MPT model, else None.

    Raises:
        ConfigError: on an unknown model name, key or layer name, a value of the wrong type,
            or an impossible shape (``d_model`` not divisible by ``n_heads``, ...).
    """
    entry = check_component(registry.models, path, section, reserved={"tokenizer"})
    own = set(inspect.signature(entry).parameters)
    if section.get("peft_config") is not None and "peft_config" in own:
        from llmfoundry.models.hf.hf_causal_lm import build_lora_config  # PEFT: only for adapters

        with _model_keys_at(path):
            build_lora_config(section["peft_config"])
    if not (isinstance(entry, type) and issubclass(entry, ComposerMPTCausalLM)):
        return None
    # The wrapper's own keywords (not the ones the builder fills or **mpt_config collects).
    own -= {"mpt_config", "tokenizer"}
    mpt_section = {k: v for k, v in section.items() if k != "name" and k not in own}
    check_fields(mpt_section, _mpt_hints(), path, owner=str(section["name"]))
    for key, types in _NESTED_MPT_TYPES.items():
        nested = mpt_section.get(key)
        if isinstance(nested, Mapping):
            # Unknown nested keys are MPTConfig's to report (plug-in layers take their own).
            check_fields(nested, types, f"{path}.{key}", open_keys=True)
    with _model_keys_at(path):
        return build_mpt_config(mpt_section)


def warn_on_sequence_lengths(model: MPTConfig | None, loaders: Iterable[tuple[str, Any]]) -> None:
    """Warn about a loader whose ``max_seq_len`` is longer than an MPT model with learned
    position embeddings takes: a sample that long fails in its batch. (Not an error: samples
    are often shorter, such as pre-tokenized ones, and LLM Foundry runs such a config.)"""
    if model is None or not model.learned_pos_emb:
        return
    for path, section in loaders:
        dataset = section.get("dataset") if isinstance(section, Mapping) else None
        length = dataset.get("max_seq_len") if isinstance(dataset, Mapping) else None
        if isinstance(length, int) and length > model.max_seq_len:
            logger.warning(
                "%s.dataset.max_seq_len=%d is longer than model.max_seq_len=%d, the most its "
                "learned position embeddings take: a longer sample will fail; set "
                "model.max_seq_len to at least %d or lower the loader's",
                path,
                length,
                model.max_seq_len,
                length,
            )


@contextlib.contextmanager
def _model_keys_at(path: str) -> Iterator[None]:
    """Re-raise a ConfigError that names ``model.<key>`` with ``path`` instead: the model
    builders name their keys so, and an eval entry's model is ``models[i].model``."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(re.sub(r"(?<![\w.\[])model\.", f"{path}.", str(err))) from err


def check_tokenizer_section(section: Any, path: str = "tokenizer") -> None:
    """Check ``tokenizer: {name, kwargs}`` (loading it is left to the build).

    Raises:
        ConfigError: on a missing name, an unknown key or a value of the wrong type.
    """
    if not isinstance(section, Mapping):
        raise ConfigError(f"{path} must be a mapping {{name: ..., kwargs: {{...}}}}")
    check_fields(section, _TOKENIZER_TYPES, path)
    if section.get("kwargs") is not None:
        check_value(
            section["kwargs"], Annotated[dict[str, Any], _TOKENIZER_KWARGS], f"{path}.kwargs"
        )
    if "name" not in section:
        raise ConfigError(f"{path}.name is missing; give a hub name or a local tokenizer folder")


def _check_text_dataset(dataset: Mapping[str, Any], path: str) -> None:
    # Other keys are dropped, with a warning, when the loader is built (drop_ignored_keys).
    keys = dataset_section_keys(StreamingTextDataset)
    options = {k: v for k, v in dataset.items() if k in keys}
    check_call_keys(StreamingTextDataset, options, path, reserved={"tokenizer", "batch_size"})
    check_dataset_options(options, path)


# Loader builder -> the check of its ``dataset:`` section.
_DATASET_CHECKS: dict[Any, Callable[[Mapping[str, Any], str], Any]] = {
    build_text_dataloader: _check_text_dataset,
    build_finetuning_dataloader: parse_dataset_config,
    build_pairs_dataloader: check_pairs_dataset,
}


def check_loader_section(path: str, section: Any) -> None:
    """Check a loader section (``train_loader``, ``eval_loaders[0]``) and its ``dataset``.

    Raises:
        ConfigError: naming an unknown loader name or key, or a value of the wrong type.
    """
    entry = check_component(
        registry.dataloaders, path, section, reserved={"tokenizer", "device_batch_size", "section"}
    )
    dataset = section.get("dataset")
    check = _DATASET_CHECKS.get(entry)
    if check is not None and isinstance(dataset, Mapping):
        check(dataset, f"{path}.dataset")


def check_named_sections(
    callbacks: Mapping[str, Any] | None,
    loggers: Mapping[str, Any] | None,
    algorithms: Mapping[str, Any] | None = None,
) -> None:
    """Check ``callbacks``, ``loggers`` and ``algorithms`` (``{entry_name: kwargs}``).

    Raises:
        ConfigError: naming an unknown entry or keyword argument, or a value of the wrong type.
    """
    callback_registries = [(registry.callbacks, False), (registry.callbacks_with_config, True)]
    check_named_components(callback_registries, "callbacks", callbacks)
    check_named_components([(registry.loggers, False)], "loggers", loggers)
    check_named_components([(registry.algorithms, False)], "algorithms", algorithms)


# A device-mesh dimension: -1 fills what the others leave of the world (Composer's mesh).
_FSDP_DEGREES: dict[str, Any] = {
    "data_parallel_shard_degree": AllOrCount,
    "data_parallel_replicate_degree": AllOrCount | None,
}


def check_parallelism(
    fsdp_config: Mapping[str, Any] | None, tp_config: Mapping[str, Any] | None = None
) -> None:
    """Check ``fsdp_config`` against Composer's ``FSDPConfig`` and ``tp_config`` against its
    ``TPConfig`` (keys, then value types; ``tensor_parallel_degree`` must be positive).

    Raises:
        ConfigError: naming the key (``fsdp_config.sharding_strategy``) and what it allows.
    """
    if fsdp_config is not None:
        check_fsdp_config(fsdp_config)
        hints = {**declared_hints(FSDPConfig), **_FSDP_DEGREES}
        check_fields(fsdp_config, hints, "fsdp_config", open_keys=True)
        shard = fsdp_config.get("data_parallel_shard_degree", -1)  # Composer's defaults
        if shard == -1 and fsdp_config.get("data_parallel_replicate_degree") == -1:
            raise ConfigError(
                "fsdp_config: data_parallel_shard_degree (default -1) and "
                "data_parallel_replicate_degree are both -1 (fill the rest of the world); set "
                "one of them to a count"
            )
    if tp_config is not None:
        check_tp_config(tp_config)
        hints = {**declared_hints(TPConfig), "strategy": str}
        hints["tensor_parallel_degree"] = Annotated[int, POSITIVE]
        check_fields(tp_config, hints, "tp_config", open_keys=True)


def check_profiler_section(section: Mapping[str, Any] | None) -> None:
    """Check ``profiler: {schedule: {...}, json_trace_handler: {...}, **Profiler kwargs}``.

    Raises:
        ConfigError: on a missing ``schedule``, or an unknown key or ill-typed value in any of
            the three (``profiler.schedule.warmup``).
    """
    if section is None:
        return
    options = dict(section)
    if "schedule" not in options:
        raise ConfigError(
            "profiler.schedule is missing; give {skip_first, wait, warmup, active, repeat}"
        )
    schedule = options.pop("schedule")
    if not isinstance(schedule, Mapping):
        raise ConfigError("profiler.schedule must be a mapping {skip_first, wait, warmup, ...}")
    check_call_kwargs(cyclic_schedule, schedule, "profiler.schedule")
    handler = options.pop("json_trace_handler", None)
    if handler is not None:
        if not isinstance(handler, Mapping):
            raise ConfigError("profiler.json_trace_handler must be a mapping of its options")
        check_call_kwargs(JSONTraceHandler, handler, "profiler.json_trace_handler")
    check_call_kwargs(Profiler, options, "profiler", reserved={"schedule", "trace_handlers"})


_SHOTS = Annotated[int, NON_NEGATIVE]
# What an icl_tasks entry's values may be, beyond ICLTaskConfig's field types: a single shot
# count, LLM Foundry's alias question_prelimiter, and the ranges.
_ICL_EXTRA = (
    ("num_fewshot", _SHOTS | list[_SHOTS]),
    ("question_prelimiter", str),
    ("batch_size", Annotated[int | None, POSITIVE]),
    ("max_seq_len", Annotated[int | None, POSITIVE]),
)
_ICL_TASK = Schema(ICLTaskConfig, open_keys=True, extra=_ICL_EXTRA)


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Drop ``logger_name``'s records for a while (a check that the build repeats)."""
    log = logging.getLogger(logger_name)
    before, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = before


def check_icl_tasks(
    icl_tasks: str | Sequence[Mapping[str, Any]] | None,
    anchors: Sequence[Path] = (),
    allow_code_eval: bool = False,
) -> None:
    """Check every ``icl_tasks`` entry (the list, or the YAML file that holds it) before any
    model or dataset is built: value types and ranges, then keys, required keys, task type and
    metric names (as the evaluators' builder checks them). The datasets are not read.

    Raises:
        MissingFileError: if the tasks file does not exist.
        ConfigError: naming ``icl_tasks[i].key`` and what it allows.
    """
    if not icl_tasks:
        return
    sections, _ = load_icl_task_sections(icl_tasks, anchors)
    hints, required = _ICL_TASK.hints(), _ICL_TASK.required()
    for index, section in enumerate(sections):
        # A required key left blank is reported as missing, by parse_task.
        given = {k: v for k, v in section.items() if k not in required or v not in (None, "")}
        check_fields(given, hints, f"icl_tasks[{index}]", open_keys=True)
        with _quiet("llmfoundry.eval.code_eval"):  # its warning comes when the task is built
            parse_task(index, section, allow_code_eval)


def compile_scope(section: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``compile_config``'s ``scope`` (``model``, the default, or ``blocks``) and the other keys,
    the ``torch.compile`` arguments.

    Raises:
        ConfigError: for another scope.
    """
    options = dict(section)
    scope = options.pop("scope", "model")
    if scope not in _COMPILE_SCOPES:
        raise ConfigError(f"compile_config.scope is {scope!r}; use model or blocks")
    return scope, options


def _check_compile_config(section: Mapping[str, Any] | None) -> None:
    if section is None:
        return
    _, options = compile_scope(section)
    check_call_kwargs(torch.compile, options, "compile_config", reserved={"model"})
    mode = options.get("mode")
    if mode is not None and options.get("backend", "inductor") == "inductor":
        from torch._inductor import list_mode_options  # torch's own list: it grows over versions

        modes = list(list_mode_options())
        if mode not in modes:
            raise ConfigError(
                f"compile_config.mode={mode!r} is not a torch.compile mode; choose one of "
                f"{', '.join(modes)} (or leave it out)"
            )


def check_train_config(cfg: TrainConfig) -> None:
    """Check every section of a training config, before anything is built or written.

    Raises:
        ConfigError: naming the first bad key (full key path) and what it allows.
    """
    mpt = check_model_section(cfg.model)
    check_tokenizer_section(cfg.tokenizer)
    check_component(registry.optimizers, "optimizer", cfg.optimizer, reserved={"params"})
    check_component(registry.schedulers, "scheduler", cfg.scheduler)
    loaders = [("train_loader", cfg.train_loader)] + [
        (path, section)
        for _, path, section in eval_loader_sections(cfg.eval_loader, cfg.eval_loaders)
    ]
    for path, section in loaders:
        check_loader_section(path, section)
    warn_on_sequence_lengths(mpt, loaders)
    check_named_sections(cfg.callbacks, cfg.loggers, cfg.algorithms)
    check_parallelism(cfg.fsdp_config, cfg.tp_config)
    _check_compile_config(cfg.compile_config)
    check_profiler_section(cfg.profiler)
    check_icl_tasks(cfg.icl_tasks or cfg.icl_tasks_str, path_anchors(cfg), cfg.allow_code_eval)
    gauntlet_config(cfg)


def check_eval_sections(cfg: EvalConfig) -> None:
    """Check the sections of an eval config that its model, loader, callback and logger checks
    leave: ``icl_tasks`` entries, ``eval_gauntlet``, ``fsdp_config`` and ``results_folder``,
    before any model is built.

    Raises:
        ConfigError, MissingFileError: naming the first bad key and what it allows.
    """
    check_parallelism(cfg.fsdp_config)
    check_icl_tasks(cfg.icl_tasks or cfg.icl_tasks_str, path_anchors(cfg), cfg.allow_code_eval)
    gauntlet_config(cfg)
    if cfg.results_folder is not None:  # else the results are written after every model ran
        check_output_folder(cfg.results_folder, "results_folder")
