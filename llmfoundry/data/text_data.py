"""Pretraining data: token (or text) samples from MDS folders, batched for a causal LM.

:class:`StreamingTextDataset` reads the MDS written by ``scripts/data_prep/convert_*.py``;
:class:`CausalLMCollator` pads samples into a batch; :func:`build_text_dataloader` is the
``text`` entry of the ``dataloaders`` registry (a ``train_loader:``/``eval_loader:`` section).

``python llmfoundry/data/text_data.py --local_path my-mds --split val --tokenizer my-tokenizer``
prints a few samples (LLM Foundry's command; :mod:`llmfoundry.cli.commands.preview_text_data`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from composer.core import DataSpec
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.loader_registries import (
    TEXT_COLLATOR,
    build_collate_fn,
    build_data_spec,
    loader_config,
    validate_replication,
)
from llmfoundry.data.mds_dataset import TOKEN_ENCODING_TYPES as TOKEN_ENCODING_TYPES
from llmfoundry.data.mds_dataset import MDSDataset, SampleIndex
from llmfoundry.data.mds_sources import CONVERT_HINT, build_streams
from llmfoundry.data.mds_sources import stream_remote_local_validate as stream_remote_local_validate
from llmfoundry.data.text_collator import TOKEN_ID_OVERRIDES, CausalLMCollator
from llmfoundry.data.text_collator import count_tokens_in_batch as count_tokens_in_batch
from llmfoundry.utils.config_checks import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    check_arguments,
)
from llmfoundry.utils.config_components import accepted_kwargs, keyword_parameters
from llmfoundry.utils.exceptions import ConfigError, DatasetError, did_you_mean
from llmfoundry.utils.registry_utils import check_keys
from llmfoundry.utils.tokenizer_utils import pad_token_id_of

logger = logging.getLogger(__name__)

# LLM Foundry's name for the token dtypes a text MDS column may be stored in.
SUPPORTED_MDS_ENCODING_TYPES = list(TOKEN_ENCODING_TYPES)
# The ``text`` loader's dataset keys besides StreamingTextDataset's, read by the replication
# validator.
TEXT_LOADER_KEYS = frozenset({"seq_parallel_replication", *TOKEN_ID_OVERRIDES.values()})


class StreamingTextDataset(MDSDataset):
    """Samples of token ids from MDS folders, local or streamed from an object store.

    A sample is read from its ``tokens`` column (``ndarray`` of int32/int64, or legacy ``bytes``
    decoded with ``token_encoding_type``; ``input_ids`` is accepted too) or, failing that, from a
    ``text`` column tokenized on the fly. Either way it is truncated to ``max_seq_len``. The
    arguments are :class:`~llmfoundry.data.mds_dataset.MDSDataset`'s.
    """

    def __getitem__(self, at: SampleIndex) -> torch.Tensor:
        """The token ids of sample ``at`` (int64, at most ``max_seq_len`` of them).

        Raises:
            DatasetError: if the sample has no ``tokens``, ``input_ids`` or ``text`` column, or
                its shard cannot be read (naming the shard file).
            ConfigError: if it has only text and the dataset has no tokenizer.
        """
        idx, sample = self._read_sample(at)
        for column in ("tokens", "input_ids"):
            if column in sample:
                return self._read_tokens(sample[column])
        if "text" in sample:
            return self._tokenize(sample["text"])
        raise DatasetError(
            f"sample {idx} has no 'tokens', 'input_ids' or 'text' column "
            f"(columns: {', '.join(sample)}); {CONVERT_HINT}"
        )

    def _read_tokens(self, value: np.ndarray | bytes) -> torch.Tensor:
        if isinstance(value, bytes):
            value = np.frombuffer(value, dtype=self.token_encoding_type)
        return torch.from_numpy(np.array(value[: self.max_seq_len], dtype=np.int64))  # a copy

    def _tokenize(self, text: str) -> torch.Tensor:
        if self.tokenizer is None:
            raise ConfigError(
                "the dataset holds text, which needs a tokenizer; set the run's `tokenizer` "
                "(or --tokenizer)"
            )
        ids = self.tokenizer(text, truncation=True, max_length=self.max_seq_len)["input_ids"]
        return torch.tensor(ids, dtype=torch.int64)


def build_text_dataloader(
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: int,
    dataset: Mapping[str, Any],
    drop_last: bool = True,
    num_workers: NonNegativeInt = 8,
    pin_memory: bool = True,
    prefetch_factor: PositiveInt | None = None,
    persistent_workers: bool | None = None,
    timeout: NonNegativeFloat = 0,
    *,
    section: str = "train_loader",
) -> DataSpec:
    """Build a ``text`` loader section: MDS samples padded into causal-LM batches.

    The replication validator, the collate function (``text_collator``) and the ``DataSpec``
    come from their registries (see :mod:`llmfoundry.data.loader_registries`).

    Args:
        tokenizer: the run's tokenizer (its pad id pads the batches).
        device_batch_size: samples per batch on this device.
        dataset: :class:`StreamingTextDataset`'s keyword arguments (``max_seq_len`` is required;
            ``streams`` is a mapping of stream name to ``streaming.Stream`` keyword arguments),
            ``seq_parallel_replication`` and the ``override_*_token_id_mismatch_error`` flags
            (for the replication validator). Any other key is dropped with a warning, as LLM
            Foundry drops it.
        drop_last: drop the last incomplete batch.
        num_workers: data loader worker processes (0 loads in the main process).
        pin_memory: pin batches in page-locked memory.
        prefetch_factor: batches loaded ahead per worker (None: 2). With 0 workers it does not
            apply and is dropped with a logged note.
        persistent_workers: keep workers alive between epochs (None: True). With 0 workers it
            does not apply and is dropped with a logged note.
        timeout: seconds to wait for a batch from a worker (0: forever).
        section: the loader's key path, for messages (``train_loader``, ``eval_loader``).

    Returns:
        A ``DataSpec`` whose token count is the number of non-padding tokens.

    Raises:
        ConfigError: naming a missing ``dataset`` key or a bad value.
        DatasetError: if the data is missing.
    """
    dataset_cfg = dict(dataset)
    text_dataset, dataset_batch_size = mds_dataset_from_section(
        StreamingTextDataset,
        dataset_cfg,
        tokenizer,
        device_batch_size,
        f"{section}.dataset",
        ignore_unknown=True,
    )
    settings = loader_settings(
        "text",
        section,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor,
        persistent_workers=persistent_workers,
        timeout=timeout,
    )
    collate_fn, loader_batch_size = settings.collate_fn(
        TEXT_COLLATOR, dataset_cfg, tokenizer, dataset_batch_size
    )
    return settings.data_spec(text_dataset, loader_batch_size, collate_fn, dataset_cfg)


def dataset_section_keys(
    dataset_cls: Callable[..., MDSDataset], fixed: Collection[str] = ()
) -> set[str]:
    """The keys a loader's ``dataset:`` section may give ``dataset_cls`` (its constructor's,
    and MDSDataset's when it passes ``**kwargs`` on), without those the loader sets itself."""
    own, passes_on = keyword_parameters(dataset_cls) or ({}, True)
    inherited = (accepted_kwargs(MDSDataset) or set()) if passes_on else set()
    return (set(own) | inherited) - {"tokenizer", "batch_size", *fixed}


def check_section_keys(dataset_cfg: Mapping[str, Any], dataset_keys: set[str], key: str) -> None:
    """A loader's ``dataset:`` section (at ``key``) has only ``dataset_keys`` and the replication
    validator's keys, and ``max_seq_len``.

    Raises:
        ConfigError: naming an unknown key (with the closest one) or the missing ``max_seq_len``.
    """
    check_keys(dataset_cfg, dataset_keys | TEXT_LOADER_KEYS, key)
    if "max_seq_len" not in dataset_cfg:
        raise ConfigError(f"{key}.max_seq_len is missing; set the sample length in tokens")


def drop_ignored_keys(dataset_cfg: dict[str, Any], accepted: Collection[str], key: str) -> None:
    """Remove the keys of ``dataset_cfg`` not in ``accepted``, warning once for each.

    LLM Foundry's ``text`` loader passes its dataset only the keys the dataset takes and drops
    the rest without a word, so its YAMLs may carry such keys (``tokenizer_name`` in older ones);
    they run here too, and a misspelt key is named.
    """
    for name in [k for k in dataset_cfg if k not in accepted]:
        logger.warning(
            "%s.%s is ignored, as LLM Foundry ignores it: this loader's dataset takes no such "
            "key%s",
            key,
            name,
            did_you_mean(name, accepted),
        )
        del dataset_cfg[name]


def mds_dataset_from_section(
    dataset_cls: Callable[..., MDSDataset],
    dataset_cfg: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: int,
    key: str,
    *,
    ignore_unknown: bool = False,
    **fixed: Any,
) -> tuple[MDSDataset, int]:
    """Build ``dataset_cls`` from a loader's ``dataset:`` section (``key``, read from
    ``dataset_cfg``): its keys checked against the constructor's, the replication validator
    consulted, ``streams`` built. ``fixed`` are constructor arguments the loader sets itself.
    With ``ignore_unknown`` a key the section may not have is dropped from ``dataset_cfg`` with
    a warning (see :func:`drop_ignored_keys`) instead of failing.

    Returns:
        The dataset and the per-device batch size the replication validator gave.

    Raises:
        ConfigError: naming an unknown (unless ignored) or missing ``dataset`` key.
    """
    dataset_keys = dataset_section_keys(dataset_cls, fixed)
    if ignore_unknown:
        drop_ignored_keys(dataset_cfg, dataset_keys | TEXT_LOADER_KEYS, key)
    check_section_keys(dataset_cfg, dataset_keys, key)
    replication, dataset_batch_size = validate_replication(
        dataset_cfg, tokenizer, device_batch_size, key
    )
    dataset_kwargs = {k: v for k, v in dataset_cfg.items() if k in dataset_keys}
    dataset_kwargs["replication"] = replication if replication > 1 else None
    if dataset_kwargs.get("streams") is not None:
        dataset_kwargs["streams"] = build_streams(dataset_kwargs["streams"], f"{key}.streams")
    built = dataset_cls(
        tokenizer=tokenizer, batch_size=dataset_batch_size, **dataset_kwargs, **fixed
    )
    return built, dataset_batch_size


def worker_process_kwargs(
    num_workers: int,
    prefetch_factor: int | None,
    persistent_workers: bool | None,
    section: str,
) -> dict[str, Any]:
    """The ``DataLoader`` options that only apply to worker processes, with their defaults.

    torch rejects ``prefetch_factor`` and ``persistent_workers`` when batches are loaded in the
    main process (``num_workers: 0``); an LLM Foundry loader section often sets them anyway, so
    they are dropped there, with one logged note.

    Returns:
        ``prefetch_factor`` (default 2) and ``persistent_workers`` (default True) with workers;
        nothing without.
    """
    if num_workers > 0:
        return {
            "prefetch_factor": 2 if prefetch_factor is None else prefetch_factor,
            "persistent_workers": True if persistent_workers is None else persistent_workers,
        }
    given = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers}
    dropped = [f"{section}.{key}" for key, value in given.items() if value is not None]
    if dropped:
        verb = "applies" if len(dropped) == 1 else "apply"
        logger.info(
            "num_workers is 0 (batches load in the main process), so %s, which only %s to "
            "worker processes, %s ignored",
            " and ".join(dropped),
            verb,
            "is" if len(dropped) == 1 else "are",
        )
    return {}


def stop_persistent_workers(loader: object) -> None:
    """Stop a ``DataLoader``'s persistent worker processes now; its next iteration starts new
    ones.

    A finished evaluation's loaders would otherwise keep their workers until the loader is
    garbage collected, which a Composer ``DataSpec`` (a reference cycle) delays to the cyclic
    collector. Meanwhile the idle forked workers make every page this process writes a copy,
    and when the collector does free the loader, torch waits 5 s for each worker.
    """
    if isinstance(loader, DataLoader) and loader._iterator is not None:
        loader._iterator = None  # the iterator's finalizer stops and joins the workers


@dataclass(frozen=True)
class LoaderSettings:
    """A loader section's ``DataLoader`` keys, and the two steps the ``text`` and ``finetuning``
    builders take with them: the collate function, then the loader and its ``DataSpec``.

    Build it with :func:`loader_settings`.
    """

    name: str
    section: str
    drop_last: bool
    num_workers: int
    pin_memory: bool
    timeout: float
    worker_kwargs: dict[str, Any]

    def collate_fn(
        self,
        collator: str,
        dataset_cfg: dict[str, Any],
        tokenizer: PreTrainedTokenizerBase,
        dataset_batch_size: int,
    ) -> tuple[Callable[[Any], Any], int]:
        """``(collate_fn, dataloader_batch_size)`` from the ``collators`` entry ``collator``,
        given this section's ``dataloader_cfg`` (see :func:`build_collate_fn`)."""
        loader_cfg = loader_config(
            self.name,
            dataset_cfg,
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            timeout=self.timeout,
            **self.worker_kwargs,
        )
        return build_collate_fn(
            collator, loader_cfg, tokenizer, dataset_batch_size, f"{self.section}.dataset"
        )

    def data_spec(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        collate_fn: Callable[[Any], Any],
        dataset_cfg: Mapping[str, Any],
        sampler: Sampler[Any] | None = None,
    ) -> DataSpec:
        """The section's ``DataLoader`` over ``dataset``, as the ``data_specs`` entry wraps it."""
        loader = self.loader(dataset, batch_size, collate_fn, sampler)
        return build_data_spec(loader, dataset_cfg, f"{self.section}.dataset")

    def loader(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        collate_fn: Callable[[Any], Any],
        sampler: Sampler[Any] | None = None,
    ) -> DataLoader[Any]:
        """The section's ``DataLoader`` over ``dataset``."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            collate_fn=collate_fn,
            sampler=sampler,
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            # Pinning needs an accelerator; without one torch warns on every loader.
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            timeout=self.timeout,
            **self.worker_kwargs,
        )


def loader_settings(
    name: str,
    section: str,
    *,
    drop_last: bool,
    num_workers: NonNegativeInt,
    pin_memory: bool,
    prefetch_factor: PositiveInt | None,
    persistent_workers: bool | None,
    timeout: NonNegativeFloat,
) -> LoaderSettings:
    """The ``name`` loader's settings for ``section`` (``train_loader``...), with the worker-only
    options resolved by :func:`worker_process_kwargs`.

    Raises:
        ConfigError: on a negative ``num_workers`` or ``timeout``, or a ``prefetch_factor`` < 1.
    """
    check_arguments(
        loader_settings,
        f"{section}.",
        num_workers=num_workers,
        prefetch_factor=prefetch_factor,
        timeout=timeout,
    )
    return LoaderSettings(
        name=name,
        section=section,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        timeout=timeout,
        worker_kwargs=worker_process_kwargs(
            num_workers, prefetch_factor, persistent_workers, section
        ),
    )


def sample_texts(
    local_path: str,
    split: str | None,
    tokenizer_name: str | None,
    max_seq_len: int,
    remote_path: str | None = None,
    num_batches: int = 2,
    batch_size: int = 2,
) -> Iterator[str]:
    """The first samples of an MDS dataset as text: for each, a ``--- N tokens ---`` header,
    then the decoded text with a tokenizer, else the token ids.

    Raises:
        UserError: if the data or tokenizer is missing.
    """
    from llmfoundry.utils.tokenizer_utils import build_tokenizer

    tokenizer = build_tokenizer(tokenizer_name) if tokenizer_name else None
    dataset = StreamingTextDataset(
        tokenizer=tokenizer,
        max_seq_len=max_seq_len,
        local=local_path,
        remote=remote_path,
        split=split,
        batch_size=batch_size,
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=CausalLMCollator(pad_token_id_of(tokenizer))
    )
    for batch_index, batch in enumerate(loader):
        if batch_index >= num_batches:
            break
        for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
            ids = row[mask.bool()].tolist()
            yield f"--- {len(ids)} tokens ---"
            yield str(tokenizer.decode(ids)) if tokenizer is not None else str(ids)


if __name__ == "__main__":  # LLM Foundry's `python llmfoundry/data/text_data.py --local_path ...`
    import sys

    from llmfoundry.cli.commands.preview_text_data import main

    sys.exit(main())
