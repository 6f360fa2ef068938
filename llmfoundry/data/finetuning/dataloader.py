"""The ``finetuning`` data loader: prompt/response and chat examples, masked, padded or packed.

A ``train_loader:`` section with ``name: finetuning`` reads its examples from one of:

* **a Hugging Face dataset**: ``dataset.hf_name`` (a hub id, or a builder such as ``json`` with
  ``hf_kwargs: {data_files: ...}``) and ``dataset.split``; rows go through the preprocessing
  function (``dataset.preprocessing_fn`` or the one registered for ``hf_name``), are tokenized
  into turns and filtered once, when the loader is built (on each node's local rank 0 first,
  which fills the ``datasets`` cache for the other ranks; see :mod:`.hf_source`, which also
  covers ``safe_load``);
* **MDS** (``dataset.local``/``remote``/``streams`` plus ``streaming.StreamingDataset``'s keys),
  read by :class:`~.mds_source.StreamingFinetuningDataset` (see :mod:`.mds_source` for the
  column layouts). MDS examples are not filtered when the loader is built: its collator counts
  and logs those it truncates and those left with no target token (kept as fully masked rows,
  or left out when packing; see :mod:`.collator`).

The ``dataset:`` keys are :class:`~.dataset_config.FinetuningDatasetConfig`'s. Building the
loader follows LLM Foundry: the replication validator gives the replication factor and the rows
per batch, the ``finetuning_collator`` entry the collate function and how many examples each
batch takes, and the ``data_spec`` entry the ``DataSpec`` (see
:mod:`llmfoundry.data.loader_registries`; plug-ins may replace each). See :mod:`.collator` for
label masking, truncation and padding, and :mod:`.packing` for packing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from composer.core import DataSpec
from composer.utils import dist
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning.dataset_config import (
    FinetuningDatasetConfig,
    parse_dataset_config,
)
from llmfoundry.data.finetuning.hf_source import (
    build_hf_finetuning_dataset,
    describe_source,
    load_hf_split,
    preprocess_row,
)
from llmfoundry.data.finetuning.mds_source import StreamingFinetuningDataset, check_turns
from llmfoundry.data.finetuning.packing import MAX_AUTO_RATIO, auto_packing_ratio
from llmfoundry.data.finetuning.turns import example_length, with_final_eos
from llmfoundry.data.loader_registries import (
    FINETUNING_COLLATOR,
    validate_replication,
)
from llmfoundry.data.mds_sources import build_streams
from llmfoundry.data.text_data import loader_settings
from llmfoundry.utils.config_checks import NonNegativeFloat, NonNegativeInt, PositiveInt
from llmfoundry.utils.tokenizer_utils import eos_token_id_of

if TYPE_CHECKING:
    import datasets

__all__ = [
    "FinetuningDatasetConfig",
    "StreamingFinetuningDataset",
    "build_finetuning_dataloader",
    "build_hf_finetuning_dataset",
    "check_turns",
    "describe_source",
    "load_hf_split",
    "parse_dataset_config",
    "preprocess_row",
]

# Examples sampled per row of a batch to choose ``packing_ratio: auto``.
AUTO_PACKING_SAMPLE_PER_ROW = 4 * MAX_AUTO_RATIO


def build_finetuning_dataloader(
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: int,
    dataset: Mapping[str, Any],
    drop_last: bool = False,
    num_workers: NonNegativeInt = 0,
    pin_memory: bool = True,
    prefetch_factor: PositiveInt | None = None,
    persistent_workers: bool | None = None,
    timeout: NonNegativeFloat = 0,
    *,
    section: str = "train_loader",
) -> DataSpec:
    """Build a ``finetuning`` loader section (see the module docstring).

    Args:
        tokenizer: the run's tokenizer (tokenizes text; its pad id pads batches, its EOS id
            ends final responses).
        device_batch_size: rows per batch on this device (the replication validator may say
            otherwise).
        dataset: the ``dataset:`` keys (:class:`FinetuningDatasetConfig`, plus MDS keys).
        drop_last: drop the last incomplete batch (off by default, as in LLM Foundry).
        num_workers: data loader worker processes (0 loads in the main process).
        pin_memory: pin batches in page-locked memory (when CUDA is available).
        prefetch_factor: batches loaded ahead per worker (default 2; with 0 workers it does not
            apply and is dropped with one logged note).
        persistent_workers: keep workers alive between epochs (default True; dropped, with a
            note, with 0 workers).
        timeout: seconds to wait for a batch from a worker (0: forever).
        section: the loader's key path, for messages (``train_loader``, ``eval_loader``).

    Returns:
        The ``data_spec`` entry's ``DataSpec`` (built in: counting non-padding tokens).

    Raises:
        ConfigError: naming a bad ``dataset`` key or value.
        DatasetError, MissingFileError: on missing or malformed data.
    """
    key = f"{section}.dataset"
    config = parse_dataset_config(dataset, key)
    dataset_cfg = dict(dataset)
    replication, rows = validate_replication(dataset_cfg, tokenizer, device_batch_size, key)
    streaming = dict(config.streaming)
    if streaming.get("streams") is not None:
        streaming["streams"] = build_streams(streaming["streams"], f"{key}.streams")
    examples: datasets.Dataset | None = None
    lengths: list[int] = []
    if config.hf_name is not None:
        examples, lengths = build_hf_finetuning_dataset(config, tokenizer, key)
    if config.packing_ratio == "auto":
        sample: Callable[[int], list[int]] = (
            partial(_sample, lengths)
            if examples is not None
            else _mds_sampler(config, streaming, tokenizer)
        )
        dataset_cfg["packing_ratio"] = _auto_ratio(
            config, dataset_cfg, tokenizer, device_batch_size, key, sample
        )
    settings = loader_settings(
        "finetuning",
        section,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor,
        persistent_workers=persistent_workers,
        timeout=timeout,
    )
    collate_fn, loader_batch_size = settings.collate_fn(
        FINETUNING_COLLATOR, dataset_cfg, tokenizer, rows
    )
    sampler = None
    torch_dataset: Dataset[Any]
    if examples is not None:
        # An HF ``datasets.Dataset`` is not a torch ``Dataset`` subclass, but it is map-style
        # (``__getitem__``/``__len__``), which is all the loader and the sampler use.
        torch_dataset = cast("Dataset[Any]", examples)
        sampler = _replicated_sampler(torch_dataset, replication, drop_last, config.shuffle)
    else:
        torch_dataset = StreamingFinetuningDataset(
            tokenizer=tokenizer,
            max_seq_len=config.max_seq_len,
            split=config.split,
            shuffle=config.shuffle,
            batch_size=loader_batch_size,
            replication=replication if replication > 1 else None,
            **streaming,
        )
    return settings.data_spec(torch_dataset, loader_batch_size, collate_fn, dataset_cfg, sampler)


def _replicated_sampler(
    dataset: Dataset[Any], replication: int, drop_last: bool, shuffle: bool
) -> Any:
    """A distributed sampler in which each group of ``replication`` consecutive ranks reads
    the same examples."""
    if replication == 1:
        return dist.get_sampler(dataset, drop_last=drop_last, shuffle=shuffle)
    return dist.get_sampler(
        dataset,
        drop_last=drop_last,
        shuffle=shuffle,
        num_replicas=dist.get_world_size() // replication,
        rank=dist.get_global_rank() // replication,
    )


def _mds_sampler(
    config: FinetuningDatasetConfig,
    streaming: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
) -> Callable[[int], list[int]]:
    """Sample example lengths of an MDS source (a probe dataset, read before the real one,
    which needs the batch size the profile decides)."""
    probe = StreamingFinetuningDataset(
        tokenizer=tokenizer, max_seq_len=config.max_seq_len, split=config.split, **streaming
    )
    eos_id = eos_token_id_of(tokenizer)
    return lambda rows: _mds_lengths(probe, rows, config.max_seq_len, eos_id)


def _auto_ratio(
    config: FinetuningDatasetConfig,
    dataset_cfg: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: int,
    key: str,
    sample: Callable[[int], list[int]],
) -> float:
    """``packing_ratio: auto``: profile the packer on a sample of example lengths.

    The rows it packs into are the replication validator's batch size for the profiling view of
    the config, as LLM Foundry's profiler builds it: no packing, ``pad_to_longest``, and
    ``seq_parallel_replication`` moved to ``auto_packing_replication``.
    """
    profile_cfg = {
        **dataset_cfg,
        "packing_ratio": 1.0,
        "pad_to_longest": True,
        "seq_parallel_replication": 1,
        "auto_packing_replication": config.seq_parallel_replication or 1,
    }
    _, rows = validate_replication(profile_cfg, tokenizer, device_batch_size, key)
    return auto_packing_ratio(sample(rows), rows, config.max_seq_len)


def _sample(lengths: list[int], rows: int) -> list[int]:
    """A seeded random sample of example lengths for ``packing_ratio: auto``."""
    size = min(len(lengths), AUTO_PACKING_SAMPLE_PER_ROW * rows)
    return random.Random(0).sample(lengths, size)


def _mds_lengths(
    dataset: StreamingFinetuningDataset, rows: int, max_seq_len: int, eos_token_id: int | None
) -> list[int]:
    size = min(len(dataset), AUTO_PACKING_SAMPLE_PER_ROW * rows)
    indices = random.Random(0).sample(range(len(dataset)), size)
    return [
        min(example_length(with_final_eos(dataset[i]["turns"], eos_token_id)), max_seq_len)
        for i in indices
    ]
