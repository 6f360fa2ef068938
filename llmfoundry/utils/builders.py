"""Build run components from config sections through the registries.

Each builder takes the section exactly as written in the YAML; the section's keys are the
constructor's keyword arguments, and an unknown key fails naming its key path.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from composer.core import Algorithm, Callback, DataSpec
from composer.loggers import LoggerDestination
from composer.models import ComposerModel
from composer.optim import ComposerScheduler
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.registry_utils import accepted_kwargs, check_keys, construct_from_registry
from llmfoundry.utils.tokenizer_utils import build_tokenizer

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


def build_composer_model(
    section: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None
) -> ComposerModel:
    """Build the ``model:`` section's entry from the ``models`` registry."""
    return construct_from_registry(registry.models, "model", section, tokenizer=tokenizer)


def build_dataloader(
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


def build_optimizer(
    section: Mapping[str, Any], params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """Build the ``optimizer:`` section over ``params``."""
    return construct_from_registry(
        registry.optimizers, "optimizer", section, list(params), reserved={"params"}
    )


def build_scheduler(section: Mapping[str, Any]) -> ComposerScheduler:
    """Build the ``scheduler:`` section."""
    return construct_from_registry(registry.schedulers, "scheduler", section)


def _build_named_components(
    reg: registry.Registry[Any], section_name: str, section: Mapping[str, Any] | None
) -> list[Any]:
    """Build ``{entry_name: kwargs}`` sections such as ``callbacks:`` or ``loggers:``."""
    components = []
    for name, kwargs in (section or {}).items():
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigError(
                f"{section_name}.{name} must be a mapping of keyword arguments (or empty)"
            )
        options = dict(kwargs or {})
        # The section key names the entry; an entry's own `name` argument (wandb's run name,
        # say) is passed through to it.
        own_name = {"name": options.pop("name")} if "name" in options else {}
        accepted = accepted_kwargs(reg.get(name)) if own_name else None
        if accepted is not None and "name" not in accepted:
            raise ConfigError(
                f"{section_name}.{name}.name is not a valid key: the key '{name}' already names "
                "the entry"
            )
        components.append(
            construct_from_registry(
                reg, f"{section_name}.{name}", {"name": name, **options}, **own_name
            )
        )
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
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigError(f"callbacks.{name} must be a mapping of keyword arguments (or empty)")
        func = registry.callbacks_with_config.get(name)
        config_param = next(iter(inspect.signature(func).parameters), "config")
        callbacks.append(
            construct_from_registry(
                registry.callbacks_with_config,
                f"callbacks.{name}",
                {"name": name, **(kwargs or {})},
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


__all__ = [
    "build_algorithms",
    "build_callbacks",
    "build_callbacks_with_config",
    "build_composer_model",
    "build_dataloader",
    "build_loggers",
    "build_optimizer",
    "build_scheduler",
    "build_tokenizer_from_section",
]
