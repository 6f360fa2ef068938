"""Build run components from config sections through the registries.

Each builder takes the section exactly as written in the YAML; the section's keys are the
constructor's keyword arguments, and an unknown key fails naming its key path.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from composer.core import Algorithm, Callback, DataSpec
from composer.loggers import LoggerDestination
from composer.models import ComposerModel
from composer.optim import ComposerScheduler
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.utils.config_components import accepted_kwargs, entry_kwargs
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.registry_utils import (
    check_keys,
    construct_from_registry,
    constructor_errors_at,
)
from llmfoundry.utils.tokenizer_utils import build_tokenizer

if TYPE_CHECKING:  # for types only; the builders below load on first use (``__getattr__``)
    from torchmetrics import Metric

    from llmfoundry.command_utils.evaluators import build_evaluators, build_icl_data_and_gauntlet
    from llmfoundry.command_utils.parallelism import build_tp_strategies
    from llmfoundry.eval.icl import build_icl_evaluators

_TOKENIZER_KEYS = {"name", "kwargs"}


def build_tokenizer_from_section(section: Mapping[str, Any]) -> PreTrainedTokenizerBase:
    """Build the tokenizer from ``tokenizer: {name: <hub name | folder | registry name>, kwargs: {...}}``.

    Raises:
        ConfigError: on a missing name or an unknown key.
        TokenizerError: if the tokenizer cannot be loaded.
    """
    check_keys(section, _TOKENIZER_KEYS, "tokenizer")
    if "name" not in section:
        raise ConfigError("tokenizer.name is missing; give a hub name or a local tokenizer folder")
    name, kwargs = str(section["name"]), dict(section.get("kwargs") or {})
    if name in registry.tokenizers:
        return construct_from_registry(registry.tokenizers, "tokenizer", {"name": name, **kwargs})
    return build_tokenizer(name, kwargs)


def build_composer_model_from_section(
    section: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None
) -> ComposerModel:
    """Build the ``model:`` section's entry from the ``models`` registry."""
    return construct_from_registry(registry.models, "model", section, tokenizer=tokenizer)


def build_dataloader_from_section(
    section_name: str,
    section: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: int,
) -> DataSpec:
    """Build a loader section (``train_loader``, ``eval_loader``) from the ``dataloaders`` registry."""
    extra: dict[str, Any] = {"tokenizer": tokenizer, "device_batch_size": device_batch_size}
    builder = registry.dataloaders.get(str(section["name"])) if "name" in section else None
    if builder is not None and "section" in (accepted_kwargs(builder) or set()):
        # Builders that name their section in error messages (train_loader vs eval_loader).
        extra["section"] = section_name
    return construct_from_registry(registry.dataloaders, section_name, section, **extra)


def build_optimizer_from_section(
    section: Mapping[str, Any], params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """Build the ``optimizer:`` section over ``params``."""
    return construct_from_registry(
        registry.optimizers, "optimizer", section, list(params), reserved={"params"}
    )


def build_scheduler_from_section(section: Mapping[str, Any]) -> ComposerScheduler:
    """Build the ``scheduler:`` section."""
    with constructor_errors_at("scheduler"):
        return construct_from_registry(registry.schedulers, "scheduler", section)


def _build_named_components(
    reg: registry.Registry[Any], section_name: str, section: Mapping[str, Any] | None
) -> list[Any]:
    """Build ``{entry_name: kwargs}`` sections such as ``callbacks:`` or ``loggers:``."""
    components = []
    for name, kwargs in (section or {}).items():
        options = entry_kwargs(f"{section_name}.{name}", kwargs)
        # The section key names the entry; an entry's own `name` argument (wandb's run name,
        # say) is passed through to it.
        own_name = {"name": options.pop("name")} if "name" in options else {}
        accepted = accepted_kwargs(reg.get(name)) if own_name else None
        if accepted is not None and "name" not in accepted:
            raise ConfigError(
                f"{section_name}.{name}.name is not a valid key: the key '{name}' already names "
                "the entry"
            )
        with constructor_errors_at(f"{section_name}.{name}"):
            component = construct_from_registry(
                reg, f"{section_name}.{name}", {"name": name, **options}, **own_name
            )
        components.append(component)
    return components


def build_callbacks(section: Mapping[str, Any] | None) -> list[Callback]:
    """Build the ``callbacks:`` section (``{speed_monitor: {window_size: 10}, ...}``).

    Entries registered in ``callbacks_with_config`` (and not in ``callbacks``) are left to
    :func:`build_callbacks_with_config`.
    """
    plain = {
        name: kwargs for name, kwargs in (section or {}).items() if not _needs_run_config(name)
    }
    return _build_named_components(registry.callbacks, "callbacks", plain)


def _needs_run_config(name: str) -> bool:
    return name in registry.callbacks_with_config and name not in registry.callbacks


def build_callbacks_with_config(
    section: Mapping[str, Any] | None, config: Mapping[str, Any]
) -> list[Callback]:
    """Build the ``callbacks:`` entries registered in ``callbacks_with_config``.

    Each such entry is called as ``entry(config, **kwargs)``: ``config`` is the whole resolved
    run config (plus anything the trainer adds, e.g. ``device_train_batch_size``) and ``kwargs``
    the entry's keys. Its first parameter is filled by the builder, so the YAML may not set it.

    Args:
        section: the ``callbacks:`` section; entries of the plain ``callbacks`` registry are skipped.
        config: the run config handed to each entry.

    Returns:
        The callbacks, in section order.
    """
    callbacks = []
    for name, kwargs in (section or {}).items():
        if not _needs_run_config(name):
            continue
        options = entry_kwargs(f"callbacks.{name}", kwargs)
        func = registry.callbacks_with_config.get(name)
        config_param = next(iter(inspect.signature(func).parameters), "config")
        callbacks.append(
            construct_from_registry(
                registry.callbacks_with_config,
                f"callbacks.{name}",
                {"name": name, **options},
                dict(config),
                reserved={config_param},
            )
        )
    return callbacks


def build_loggers(section: Mapping[str, Any] | None) -> list[LoggerDestination]:
    """Build the ``loggers:`` section (``{wandb: {project: ...}}``)."""
    return _build_named_components(registry.loggers, "loggers", section)


def build_algorithms(section: Mapping[str, Any] | None) -> list[Algorithm]:
    """Build the ``algorithms:`` section (``{gradient_clipping: {clipping_type: norm, ...}}``)."""
    return _build_named_components(registry.algorithms, "algorithms", section)


# LLM Foundry's call shapes: a registry name and its keyword arguments, as plug-ins call them.
# (``build_tokenizer(name, kwargs)`` is tokenizer_utils' own, exported from here too.)


def build_composer_model(
    name: str,
    cfg: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase | None,
    init_context: AbstractContextManager[Any] | None = None,
    master_weights_dtype: str | torch.dtype | None = None,
) -> ComposerModel:
    """The ``models`` entry ``name`` built with ``cfg``'s keys, inside ``init_context`` (e.g. a
    meta-device context), its weights then cast to ``master_weights_dtype`` if given."""
    with init_context or nullcontext():
        model = build_composer_model_from_section({"name": name, **cfg}, tokenizer)
    if isinstance(master_weights_dtype, str):
        from llmfoundry.models.hf.export import dtype_of_precision

        master_weights_dtype = dtype_of_precision(master_weights_dtype, "master_weights_dtype")
    return model if master_weights_dtype is None else model.to(dtype=master_weights_dtype)


def build_dataloader(
    cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, device_batch_size: int
) -> DataSpec:
    """The loader of a ``{name: text | finetuning | <plug-in>, ...}`` section."""
    return build_dataloader_from_section("dataloader", cfg, tokenizer, device_batch_size)


def build_optimizer(
    model: torch.nn.Module, name: str, optimizer_config: Mapping[str, Any] | None = None
) -> torch.optim.Optimizer:
    """The ``optimizers`` entry ``name`` over ``model``'s parameters."""
    section = {"name": name, **(optimizer_config or {})}
    return build_optimizer_from_section(section, model.parameters())


def build_scheduler(
    name: str, scheduler_config: Mapping[str, Any] | None = None
) -> ComposerScheduler:
    """The ``schedulers`` entry ``name`` built with ``scheduler_config``."""
    return build_scheduler_from_section({"name": name, **(scheduler_config or {})})


def build_callback(
    name: str,
    kwargs: Mapping[str, Any] | None = None,
    train_config: Mapping[str, Any] | None = None,
) -> Callback:
    """One callback by name; a ``callbacks_with_config`` entry also gets ``train_config``.

    Raises:
        ConfigError: if the entry needs the run config and ``train_config`` is not given.
    """
    if _needs_run_config(name):
        if train_config is None:
            raise ConfigError(
                f"callback '{name}' needs the run config; pass train_config=<the config dict>"
            )
        return build_callbacks_with_config({name: kwargs}, train_config)[0]
    return build_callbacks({name: kwargs})[0]


def build_logger(name: str, kwargs: Mapping[str, Any] | None = None) -> LoggerDestination:
    """One logger destination of the ``loggers`` registry by name."""
    return build_loggers({name: kwargs})[0]


def build_algorithm(name: str, kwargs: Mapping[str, Any] | None = None) -> Algorithm:
    """One Composer algorithm of the ``algorithms`` registry by name."""
    return build_algorithms({name: kwargs})[0]


def build_metric(name: str, kwargs: Mapping[str, Any] | None = None) -> Metric:
    """One metric of the ``metrics`` registry by name."""
    return construct_from_registry(
        registry.metrics, f"metrics.{name}", {"name": name, **(kwargs or {})}
    )


# Defined beside the commands that use them (they import this module); loaded on first use.
_LAZY = {
    "build_evaluators": "llmfoundry.command_utils.evaluators",
    "build_icl_data_and_gauntlet": "llmfoundry.command_utils.evaluators",
    "build_icl_evaluators": "llmfoundry.eval.icl",
    "build_tp_strategies": "llmfoundry.command_utils.parallelism",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "build_algorithm",
    "build_algorithms",
    "build_callback",
    "build_callbacks",
    "build_callbacks_with_config",
    "build_composer_model",
    "build_composer_model_from_section",
    "build_dataloader",
    "build_dataloader_from_section",
    "build_evaluators",
    "build_icl_data_and_gauntlet",
    "build_icl_evaluators",
    "build_logger",
    "build_loggers",
    "build_metric",
    "build_optimizer",
    "build_optimizer_from_section",
    "build_scheduler",
    "build_scheduler_from_section",
    "build_tokenizer",
    "build_tokenizer_from_section",
    "build_tp_strategies",
]
