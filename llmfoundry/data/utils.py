"""The built-in entries of the ``dataset_replication_validators``, ``collators`` and ``data_specs``
registries, under LLM Foundry's names (registered by :mod:`llmfoundry.data`):

* ``dataset_replication_validator``: :func:`validate_ds_replication`;
* ``finetuning_collator``: :func:`get_finetuning_collator`; ``text_collator``:
  :func:`get_text_collator`;
* ``data_spec``: :func:`get_data_spec`.

:mod:`llmfoundry.data.loader_registries` describes how the loaders call them; a plug-in that
registers one of these names replaces the built-in entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from composer.core import DataSpec
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning.collator import Seq2SeqFinetuningCollator
from llmfoundry.data.finetuning.dataset_config import parse_dataset_config
from llmfoundry.data.finetuning.packing import BinPackCollator
from llmfoundry.data.text_collator import (
    TOKEN_ID_OVERRIDES,
    CausalLMCollator,
    count_tokens_in_batch,
)
from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.tokenizer_utils import eos_token_id_of, pad_token_id_of

logger = logging.getLogger(__name__)

__all__ = [
    "get_data_spec",
    "get_finetuning_collator",
    "get_text_collator",
    "get_tokens_per_batch_func",
    "validate_ds_replication",
]


def validate_ds_replication(
    dataset_cfg: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase | None,
    device_batch_size: int | float,
    *,
    section: str = "dataset",
) -> tuple[int, int]:
    """The replication factor and rows per batch: ``dataset_cfg['replication']`` (default 1)
    and ``device_batch_size``.

    ``auto_packing_replication`` is only checked: this validator has no sequence parallelism
    for it to stand in for. As LLM Foundry's, it also checks the section's ``eos_token_id`` /
    ``bos_token_id`` against the tokenizer's (:func:`check_token_ids`).

    Args:
        dataset_cfg: the loader's ``dataset`` section.
        tokenizer: the run's tokenizer.
        device_batch_size: the run's rows per batch on a device.
        section: the ``dataset`` section's key path, for messages.

    Raises:
        ConfigError: on ``seq_parallel_replication`` above 1 (not implemented; a plug-in
            validator may support it), a non-integer batch size, a bad replication value, or
            a token id that differs from the tokenizer's without its override.
    """
    if tokenizer is not None:
        check_token_ids(dataset_cfg, tokenizer, section)
    for name in ("replication", "seq_parallel_replication", "auto_packing_replication"):
        check_value(dataset_cfg.get(name), PositiveInt | None, f"{section}.{name}")
    if (dataset_cfg.get("seq_parallel_replication") or 1) > 1:
        raise ConfigError(
            f"{section}.seq_parallel_replication is {dataset_cfg['seq_parallel_replication']}, "
            "but sequence parallelism is not implemented; set it to 1 (or register a "
            "'dataset_replication_validator' plug-in that supports it)"
        )
    if isinstance(device_batch_size, bool) or not isinstance(device_batch_size, int):
        raise ConfigError(
            f"the device batch size must be a whole number of rows, got {device_batch_size!r}"
        )
    return int(dataset_cfg.get("replication") or 1), device_batch_size


def check_token_ids(
    dataset_cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, section: str
) -> None:
    """A ``dataset`` section's ``eos_token_id`` / ``bos_token_id`` must be the tokenizer's, unless
    its ``override_*_token_id_mismatch_error`` is true (then a warning says they differ).

    Raises:
        ConfigError: naming the key, both ids and the override key.
    """
    for key, override in TOKEN_ID_OVERRIDES.items():
        given, own = dataset_cfg.get(key), getattr(tokenizer, key, None)
        if given is None or given == own:
            continue
        message = f"{section}.{key} is {given}, but the tokenizer's {key} is {own}"
        if not dataset_cfg.get(override):
            raise ConfigError(f"{message}; fix it, or set {section}.{override}: true")
        logger.warning("%s (%s is set)", message, override)


def get_finetuning_collator(
    dataloader_cfg: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    dataset_batch_size: int,
    *,
    section: str = "dataset",
) -> tuple[Seq2SeqFinetuningCollator | BinPackCollator, int]:
    """The finetuning collate function and the examples the loader hands it per batch.

    :class:`Seq2SeqFinetuningCollator` over ``dataloader_cfg['dataset']``'s settings; with a
    ``packing_ratio`` above 1, wrapped in :class:`BinPackCollator`, which packs
    ``int(dataset_batch_size x packing_ratio)`` examples into ``dataset_batch_size`` rows.

    Raises:
        ConfigError: on a bad ``dataset`` key or value, or a ``packing_ratio: auto`` left
            unresolved (the loader resolves it before calling this).
    """
    config = parse_dataset_config(dataloader_cfg["dataset"], section)
    collator = Seq2SeqFinetuningCollator(
        pad_token_id=pad_token_id_of(tokenizer),
        max_seq_len=config.max_seq_len,
        target_prompts=config.target_prompts,
        target_responses=config.target_responses,
        decoder_only_format=config.decoder_only_format,
        allow_pad_trimming=config.allow_pad_trimming,
        # HF examples were counted and filtered when loaded; MDS ones are counted as collated.
        track_truncation=config.hf_name is None,
        eos_token_id=eos_token_id_of(tokenizer),
        pad_to_longest=config.pad_to_longest,
    )
    ratio = config.packing_ratio
    if ratio == "auto":
        raise ConfigError(
            f"{section}.packing_ratio: auto must be resolved to a number before the collator "
            "is built (the finetuning loader does this)"
        )
    examples = int((ratio or 1.0) * dataset_batch_size)
    if examples <= dataset_batch_size:
        return collator, dataset_batch_size
    logger.info("packing %d examples into each batch of %d rows", examples, dataset_batch_size)
    return BinPackCollator(collator, dataset_batch_size, config.max_leftover_bins_to_keep), examples


def get_text_collator(
    dataloader_cfg: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    dataset_batch_size: int,
    *,
    section: str = "dataset",
) -> tuple[CausalLMCollator, int]:
    """The ``text`` loader's collate function (:class:`CausalLMCollator`) and batch size.

    Its ``sequence_id`` separator is the ``dataset`` section's ``eos_token_id`` or
    ``bos_token_id``, if set.

    Raises:
        ConfigError: if both separators are set.
    """
    del section
    dataset_cfg = dataloader_cfg["dataset"]
    collator = CausalLMCollator(
        pad_token_id_of(tokenizer),
        eos_token_id=dataset_cfg.get("eos_token_id"),
        bos_token_id=dataset_cfg.get("bos_token_id"),
    )
    return collator, dataset_batch_size


def get_tokens_per_batch_func(
    decoder_only: bool = True,
) -> Callable[[Mapping[str, Any]], dict[str, int]]:
    """The token counter of the built-in ``DataSpec``: ``total`` (non-padding tokens, decoder
    tokens included for encoder-decoder batches) and ``loss_generating`` (scored labels).

    Args:
        decoder_only: kept for LLM Foundry's signature; the counter reads the batch's keys.
    """
    del decoder_only
    return count_tokens_in_batch


def get_data_spec(dl: Iterable[Any], dataset_cfg: Mapping[str, Any] | None = None) -> DataSpec:
    """A ``DataSpec`` over ``dl`` that counts tokens with :func:`get_tokens_per_batch_func`."""
    del dataset_cfg
    return DataSpec(dataloader=dl, get_num_tokens_in_batch=get_tokens_per_batch_func())
