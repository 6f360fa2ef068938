"""How the ``text`` and ``finetuning`` loaders use the ``dataset_replication_validators``,
``collators`` and ``data_specs`` registries, under LLM Foundry's entry names.

Building a loader takes three registry entries, each looked up by a fixed name and called with
LLM Foundry's keyword arguments, so that a plug-in registering the same name (in code, or
through the ``llmfoundry_<registry>`` entry-point group, which takes precedence) replaces the
built-in one (:mod:`llmfoundry.data.utils`):

1. ``dataset_replication_validators['dataset_replication_validator'](dataset_cfg, tokenizer,
   device_batch_size)`` returns ``(replication_factor, dataset_batch_size)``: how many
   consecutive ranks read the same examples, and how many rows a batch has;
2. ``collators['finetuning_collator' | 'text_collator'](dataloader_cfg, tokenizer,
   dataset_batch_size)`` returns ``(collate_fn, dataloader_batch_size)``: the collate function
   and how many examples the data loader hands it per batch (more than the rows when packing);
3. ``data_specs['data_spec'](dl, dataset_cfg)`` returns the Composer ``DataSpec``.

An entry that also takes a ``section`` keyword (as the built-in ones do) is given the
``dataset`` section's key path, for its error messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from composer.core import DataSpec
from composer.utils import dist
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.utils.config_components import accepted_kwargs
from llmfoundry.utils.exceptions import ConfigError

REPLICATION_VALIDATOR = "dataset_replication_validator"
FINETUNING_COLLATOR = "finetuning_collator"
TEXT_COLLATOR = "text_collator"
DATA_SPEC = "data_spec"


def _call(reg: registry.Registry[Any], name: str, section: str, **kwargs: Any) -> Any:
    func = reg.get(name)
    accepted = accepted_kwargs(func)
    if accepted is None or "section" in accepted:
        kwargs["section"] = section
    return func(**kwargs)


def _check_pair(result: Any, reg: registry.Registry[Any], name: str, what: str) -> tuple[Any, int]:
    if (
        not isinstance(result, tuple)
        or len(result) != 2
        or not isinstance(result[1], int)
        or isinstance(result[1], bool)
        or result[1] < 1
    ):
        raise ConfigError(
            f"the '{name}' entry of the '{reg.name}' registry returned {result!r}; it must "
            f"return ({what}, a batch size >= 1)"
        )
    return result[0], result[1]


def validate_replication(
    dataset_cfg: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: int,
    section: str,
) -> tuple[int, int]:
    """``(replication_factor, dataset_batch_size)`` from the replication validator.

    Raises:
        ConfigError: on a bad return value, or a factor that does not divide the processes.
    """
    reg = registry.dataset_replication_validators
    replication, batch_size = _check_pair(
        _call(
            reg,
            REPLICATION_VALIDATOR,
            section,
            dataset_cfg=dataset_cfg,
            tokenizer=tokenizer,
            device_batch_size=device_batch_size,
        ),
        reg,
        REPLICATION_VALIDATOR,
        "a replication factor",
    )
    world_size = dist.get_world_size()
    if not isinstance(replication, int) or replication < 1 or world_size % replication:
        raise ConfigError(
            f"{section}: replication factor {replication!r} does not divide the {world_size} "
            "processes; set replication to a divisor of the number of processes"
        )
    return replication, batch_size


def build_collate_fn(
    name: str,
    dataloader_cfg: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    dataset_batch_size: int,
    section: str,
) -> tuple[Callable[[Any], Any], int]:
    """``(collate_fn, dataloader_batch_size)`` from the ``collators`` entry ``name``.

    Raises:
        ConfigError: on a bad return value (and whatever the entry raises).
    """
    reg = registry.collators
    result = _call(
        reg,
        name,
        section,
        dataloader_cfg=dataloader_cfg,
        tokenizer=tokenizer,
        dataset_batch_size=dataset_batch_size,
    )
    collate_fn, batch_size = _check_pair(result, reg, name, "a collate function")
    if not callable(collate_fn):
        raise ConfigError(f"the '{name}' entry of the 'collators' registry returned no function")
    return collate_fn, batch_size


def build_data_spec(dl: DataLoader[Any], dataset_cfg: Mapping[str, Any], section: str) -> DataSpec:
    """The ``DataSpec`` from the ``data_specs`` entry ``data_spec``.

    Raises:
        ConfigError: if it returns something else.
    """
    spec = _call(registry.data_specs, DATA_SPEC, section, dl=dl, dataset_cfg=dataset_cfg)
    if not isinstance(spec, DataSpec):
        raise ConfigError(
            f"the '{DATA_SPEC}' entry of the 'data_specs' registry returned "
            f"{type(spec).__name__}, not a composer DataSpec"
        )
    return spec


def loader_config(name: str, dataset_cfg: dict[str, Any], **loader_kwargs: Any) -> dict[str, Any]:
    """The ``dataloader_cfg`` a collator entry receives: ``{name, dataset, drop_last, ...}``."""
    return {"name": name, "dataset": dataset_cfg, **loader_kwargs}
