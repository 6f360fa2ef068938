"""Check a whole run config before anything is built: no tokenizer, model, data, folder or
process group exists until every section has passed.

Each ``{name: ..., **kwargs}`` section is checked against its registry entry's signature
(:mod:`llmfoundry.utils.config_checks`), so a typo or a value of the wrong type fails in one
line naming its full key path (``optimizer.lr``, ``callbacks.speed_monitor.window_size``,
``model.attn_config.qk_ln``). An MPT ``model:`` section is checked against the types of
``MPTConfig`` and its nested configs, then built as an ``MPTConfig`` (cheap: no weights), which
checks the shapes and the layer names.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

import torch
from composer.utils.parallelism import FSDPConfig

from llmfoundry import registry
from llmfoundry.command_utils.evaluators import eval_loader_sections
from llmfoundry.command_utils.parallelism import check_fsdp_config, check_tp_config
from llmfoundry.data.finetuning.dataloader import build_finetuning_dataloader
from llmfoundry.data.finetuning.dataset_config import parse_dataset_config
from llmfoundry.data.text_data import StreamingTextDataset, build_text_dataloader
from llmfoundry.models.hf.composer_mpt import LOSS_FNS, ComposerMPTCausalLM, build_mpt_config
from llmfoundry.models.mpt import MPTConfig
from llmfoundry.models.mpt.config_defaults import (
    ATTN_CONFIG_TYPES,
    FFN_CONFIG_TYPES,
    INIT_CONFIG_TYPES,
)
from llmfoundry.utils.config_checks import (
    check_call_kwargs,
    check_component,
    check_fields,
    check_named_components,
)
from llmfoundry.utils.config_utils import TrainConfig
from llmfoundry.utils.exceptions import ConfigError

__all__ = [
    "check_loader_section",
    "check_model_section",
    "check_named_sections",
    "check_tokenizer_section",
    "check_train_config",
]

_NESTED_MPT_TYPES = {
    "attn_config": ATTN_CONFIG_TYPES,
    "ffn_config": FFN_CONFIG_TYPES,
    "init_config": INIT_CONFIG_TYPES,
}
_TOKENIZER_TYPES: dict[str, Any] = {"name": str, "kwargs": dict[str, Any] | None}
_COMPILE_SCOPES = ("model", "blocks")


def _mpt_hints() -> dict[str, Any]:
    """``MPTConfig``'s keyword arguments and their annotations."""
    hints = typing.get_type_hints(MPTConfig.__init__)
    return {k: v for k, v in hints.items() if k not in ("return", "kwargs", "layer_sources")}


def check_model_section(section: Any, path: str = "model") -> None:
    """Check a ``model:`` section without building the model.

    Raises:
        ConfigError: on an unknown model name, key or layer name, a value of the wrong type,
            or an impossible shape (``d_model`` not divisible by ``n_heads``, ...).
    """
    entry = check_component(registry.models, path, section, reserved={"tokenizer"})
    if not (isinstance(entry, type) and issubclass(entry, ComposerMPTCausalLM)):
        return
    loss_fn = section.get("loss_fn", LOSS_FNS[0])
    if loss_fn not in LOSS_FNS:
        raise ConfigError(
            f"{path}.loss_fn={loss_fn!r} is not supported; choose one of {', '.join(LOSS_FNS)}"
        )
    own = set(inspect.signature(entry).parameters) - {"mpt_config", "tokenizer"}
    mpt_section = {k: v for k, v in section.items() if k != "name" and k not in own}
    check_fields(mpt_section, _mpt_hints(), path, owner=str(section["name"]))
    for key, types in _NESTED_MPT_TYPES.items():
        nested = mpt_section.get(key)
        if isinstance(nested, Mapping):
            # Unknown nested keys are MPTConfig's to report (plug-in layers take their own).
            check_fields(nested, types, f"{path}.{key}", open_keys=True)
    try:
        build_mpt_config(mpt_section)
    except ConfigError as err:
        # MPTConfig names its keys model.<key>; an eval entry's model is models[i].model.
        message = re.sub(r"(?<![\w.\[])model\.", f"{path}.", str(err))
        raise ConfigError(message) from err


def check_tokenizer_section(section: Any, path: str = "tokenizer") -> None:
    """Check ``tokenizer: {name, kwargs}`` (loading it is left to the build).

    Raises:
        ConfigError: on a missing name, an unknown key or a value of the wrong type.
    """
    if not isinstance(section, Mapping):
        raise ConfigError(f"{path} must be a mapping {{name: ..., kwargs: {{...}}}}")
    check_fields(section, _TOKENIZER_TYPES, path)
    if "name" not in section:
        raise ConfigError(f"{path}.name is missing; give a hub name or a local tokenizer folder")


def _check_text_dataset(dataset: Mapping[str, Any], path: str) -> None:
    options = {k: v for k, v in dataset.items() if k != "seq_parallel_replication"}
    check_call_kwargs(StreamingTextDataset, options, path, reserved={"tokenizer", "batch_size"})


# Loader builder -> the check of its ``dataset:`` section.
_DATASET_CHECKS: dict[Any, Callable[[Mapping[str, Any], str], Any]] = {
    build_text_dataloader: _check_text_dataset,
    build_finetuning_dataloader: parse_dataset_config,
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


def _check_parallelism(cfg: TrainConfig) -> None:
    if cfg.fsdp_config is not None:
        check_fsdp_config(cfg.fsdp_config)
        check_fields(
            cfg.fsdp_config, typing.get_type_hints(FSDPConfig), "fsdp_config", open_keys=True
        )
    if cfg.tp_config is not None:
        check_tp_config(cfg.tp_config)


def _check_compile_config(section: Mapping[str, Any] | None) -> None:
    if section is None:
        return
    options = dict(section)
    scope = options.pop("scope", "model")
    if scope not in _COMPILE_SCOPES:
        raise ConfigError(f"compile_config.scope is {scope!r}; use model or blocks")
    check_call_kwargs(torch.compile, options, "compile_config", reserved={"model"})


def check_train_config(cfg: TrainConfig) -> None:
    """Check every section of a training config, before anything is built or written.

    Raises:
        ConfigError: naming the first bad key (full key path) and what it allows.
    """
    check_model_section(cfg.model)
    check_tokenizer_section(cfg.tokenizer)
    check_component(registry.optimizers, "optimizer", cfg.optimizer, reserved={"params"})
    check_component(registry.schedulers, "scheduler", cfg.scheduler)
    check_loader_section("train_loader", cfg.train_loader)
    for _, path, section in eval_loader_sections(cfg.eval_loader, cfg.eval_loaders):
        check_loader_section(path, section)
    check_named_sections(cfg.callbacks, cfg.loggers, cfg.algorithms)
    _check_parallelism(cfg)
    _check_compile_config(cfg.compile_config)
