"""The ``finetuning`` data loader: prompt/response and chat examples, masked, padded or packed.

A ``train_loader:`` section with ``name: finetuning`` reads its examples from one of:

* **a Hugging Face dataset**: ``dataset.hf_name`` (a hub id, or a builder such as ``json`` with
  ``hf_kwargs: {data_files: ...}``) and ``dataset.split``; rows go through the preprocessing
  function (``dataset.preprocessing_fn`` or the one registered for ``hf_name``), are tokenized
  into turns and filtered once, when the loader is built (on each node's local rank 0 first,
  which fills the ``datasets`` cache for the other ranks; see :mod:`.hf_source`, which also
  covers ``safe_load``);
* **MDS** (``dataset.local``/``remote``/``streams`` plus ``streaming.StreamingDataset``'s keys),
  read by :class:`StreamingFinetuningDataset`. A sample holds one of: the token columns
  ``input_ids`` (the prompt) and ``labels`` (the response) as ``ndarray`` (or legacy ``bytes``
  of ``token_encoding_type``), a single turn already tokenized; a ``turns`` column (``json``),
  the list of ``{'input_ids': [...], 'labels': [...]}`` turns of a tokenized chat; or text
  columns ``prompt`` and ``response`` (or ``messages`` as a ``json`` column), tokenized when
  read. MDS examples are not filtered when the loader is built: its collator counts and logs
  those it truncates and those left with no target token (kept as fully masked rows, or left
  out when packing; see :mod:`.collator`).

See :mod:`.collator` for label masking and truncation and :mod:`.packing` for packing.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import datasets
import numpy as np
import torch
from composer.core import DataSpec
from composer.utils import dist
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning.collator import (
    Seq2SeqFinetuningCollator,
    TargetPolicy,
    count_tokens_in_batch,
    example_length,
    is_trainable,
)
from llmfoundry.data.finetuning.formatting import Turn, tokenize_example
from llmfoundry.data.finetuning.hf_source import check_safe_load, local_rank_zero_first
from llmfoundry.data.finetuning.packing import (
    MAX_AUTO_RATIO,
    BinPackCollator,
    auto_packing_ratio,
    check_max_leftover_bins_to_keep,
)
from llmfoundry.data.finetuning.tasks import PreprocessingFn, dataset_constructor
from llmfoundry.data.text_data import (
    StreamingTextDataset,
    build_streams,
    pad_token_id_of,
    worker_process_kwargs,
)
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from llmfoundry.utils.registry_utils import accepted_kwargs, check_keys

logger = logging.getLogger(__name__)

# Examples sampled per row of a batch to choose ``packing_ratio: auto``.
AUTO_PACKING_SAMPLE_PER_ROW = 4 * MAX_AUTO_RATIO
_TURN_FEATURES = datasets.Features(
    {
        "turns": datasets.List(
            {
                "input_ids": datasets.List(datasets.Value("int32")),
                "labels": datasets.List(datasets.Value("int32")),
            }
        ),
        "_length": datasets.Value("int64"),
        "_trainable": datasets.Value("bool"),
    }
)


@dataclass
class FinetuningDatasetConfig:
    """The ``dataset:`` keys of a ``finetuning`` loader (besides the MDS ones).

    Attributes:
        max_seq_len: the longest sequence, in tokens (required).
        hf_name: a Hugging Face dataset (hub id, local folder or builder such as ``json``).
        hf_kwargs: extra keyword arguments of ``datasets.load_dataset`` (``data_files``, ...).
        split: the split to read (an HF split, or the MDS sub-folder).
        preprocessing_fn: ``"package.module:function"`` or a registered name; None uses the
            function registered for ``hf_name``, if any.
        allow_pad_trimming: pad a batch to its longest example instead of ``max_seq_len``.
        decoder_only_format: one sequence per example (False: encoder-decoder batches).
        shuffle: shuffle the examples.
        target_prompts: ``none``, ``all`` or ``length>=N`` (which prompts are loss targets).
        target_responses: ``last`` or ``all`` (which responses are loss targets).
        packing_ratio: examples per row to pack (a number >= 1), ``auto``, or None (no packing).
        max_leftover_bins_to_keep: when packing, how many bins of examples that did not fit
            a batch to carry over to the next (None: all; see :mod:`.packing`).
        safe_load: allow only local data that runs no code when loaded (see
            :mod:`.hf_source`); no effect on MDS sources, which never run code.
        streaming: the remaining keys, for ``StreamingFinetuningDataset`` (MDS sources).
    """

    max_seq_len: int
    hf_name: str | None = None
    hf_kwargs: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    preprocessing_fn: str | None = None
    allow_pad_trimming: bool = False
    decoder_only_format: bool = True
    shuffle: bool = True
    target_prompts: str = "none"
    target_responses: str = "last"
    packing_ratio: float | str | None = None
    max_leftover_bins_to_keep: int | None = None
    safe_load: bool = False
    streaming: dict[str, Any] = field(default_factory=dict)


def parse_dataset_config(dataset: Mapping[str, Any], key: str) -> FinetuningDatasetConfig:
    """Check a ``dataset:`` section's keys and values.

    Args:
        dataset: the section.
        key: its key path (``train_loader.dataset``).

    Raises:
        ConfigError: on an unknown key (with a did-you-mean), a missing ``max_seq_len``, no
            source or two sources, or a bad value.
    """
    own = {f.name for f in fields(FinetuningDatasetConfig)} - {"streaming"}
    streaming_keys = (accepted_kwargs(StreamingTextDataset) or set()) - {
        "tokenizer",
        "batch_size",
        *own,
    }
    check_keys(dataset, own | streaming_keys, key)
    if "max_seq_len" not in dataset:
        raise ConfigError(f"{key}.max_seq_len is missing; set the longest sequence in tokens")
    config = FinetuningDatasetConfig(
        **{k: v for k, v in dataset.items() if k in own and v is not None},
        streaming={k: v for k, v in dataset.items() if k in streaming_keys},
    )
    max_seq_len = config.max_seq_len
    if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool) or max_seq_len <= 0:
        raise ConfigError(f"{key}.max_seq_len must be a positive integer, got {max_seq_len!r}")
    has_mds = any(config.streaming.get(k) for k in ("local", "remote", "streams"))
    if config.hf_name is None and not has_mds:
        raise ConfigError(
            f"{key} needs a source: hf_name (a Hugging Face dataset, e.g. json with "
            "hf_kwargs.data_files) or local/remote (MDS)"
        )
    if config.hf_name is not None and has_mds:
        raise ConfigError(f"{key}: set either hf_name or local/remote/streams (MDS), not both")
    if config.hf_name is not None and config.streaming:
        raise ConfigError(
            f"{key}.{next(iter(config.streaming))} applies to MDS sources only; remove it "
            "(this dataset reads hf_name)"
        )
    if not isinstance(config.hf_kwargs, Mapping):
        raise ConfigError(f"{key}.hf_kwargs must be a mapping of load_dataset keyword arguments")
    config.hf_kwargs = dict(config.hf_kwargs)
    TargetPolicy.from_config(config.target_prompts, config.target_responses, key)
    if not config.decoder_only_format:
        if (config.target_prompts, config.target_responses) != ("none", "last"):
            raise ConfigError(
                f"{key}: decoder_only_format: false trains on the response only; leave "
                "target_prompts: none and target_responses: last"
            )
        if config.packing_ratio not in (None, 1, 1.0):
            raise ConfigError(f"{key}.packing_ratio needs decoder_only_format: true")
    _check_packing_ratio(config.packing_ratio, f"{key}.packing_ratio")
    check_max_leftover_bins_to_keep(
        config.max_leftover_bins_to_keep, f"{key}.max_leftover_bins_to_keep"
    )
    if not isinstance(config.safe_load, bool):
        raise ConfigError(f"{key}.safe_load must be true or false, got {config.safe_load!r}")
    return config


def _check_packing_ratio(value: Any, key: str) -> None:
    if value is None or value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise ConfigError(f"{key} is {value!r}; use a number >= 1, auto, or null (no packing)")


def describe_source(hf_name: str, split: str | None, hf_kwargs: Mapping[str, Any]) -> str:
    """How error messages name an HF source: its data file(s) when given, else its name."""
    data_files = hf_kwargs.get("data_files")
    if isinstance(data_files, Mapping) and split in data_files:
        data_files = data_files[split]
    if isinstance(data_files, str):
        return f"'{data_files}'"
    if isinstance(data_files, list | tuple) and len(data_files) == 1:
        return f"'{data_files[0]}'"
    return f"dataset '{hf_name}' split '{split}'"


def load_hf_split(
    hf_name: str, split: str | None, hf_kwargs: Mapping[str, Any], key: str
) -> datasets.Dataset:
    """``datasets.load_dataset(hf_name, split=split, **hf_kwargs)`` with one-line errors.

    Raises:
        ConfigError: if no split is given or the result is not a map-style dataset.
        DatasetError: if the split does not exist (naming those that do).
        MissingFileError: if a data file is missing.
    """
    if split is None:
        raise ConfigError(f"{key}.split is missing; name the split to read (e.g. train)")
    try:
        loaded = datasets.load_dataset(hf_name, split=split, **hf_kwargs)
    except ValueError as err:
        match = re.search(r"Unknown split \"[^\"]*\"\. Should be one of (\[.*\])", str(err))
        if match is None:
            raise
        raise DatasetError(
            f"{key}.split '{split}' is not a split of '{hf_name}'; available: {match.group(1)}"
        ) from err
    except FileNotFoundError as err:
        raise MissingFileError(
            f"{key}: cannot load '{hf_name}' ({err}); check hf_name and hf_kwargs.data_files"
        ) from err
    if not isinstance(loaded, datasets.Dataset):
        raise ConfigError(
            f"{key}: load_dataset returned a {type(loaded).__name__}; the finetuning loader "
            "needs a map-style dataset (do not set hf_kwargs.streaming)"
        )
    return loaded


def build_hf_finetuning_dataset(
    config: FinetuningDatasetConfig, tokenizer: PreTrainedTokenizerBase, key: str
) -> tuple[datasets.Dataset, list[int]]:
    """Load, preprocess, tokenize and filter an HF dataset into ``{'turns': [...]}`` rows.

    With several processes, each node's local rank 0 does this first and the node's other
    ranks then read the ``datasets`` cache it filled (:func:`.hf_source.local_rank_zero_first`).

    Returns:
        The dataset and each kept example's length in tokens after truncation.

    Raises:
        DatasetError: naming the source, row and field of a bad example, or if every example
            is dropped.
        ConfigError: on a bad preprocessing function, or a source ``safe_load`` refuses.
    """
    assert config.hf_name is not None
    hf_name = config.hf_name
    if config.safe_load:
        check_safe_load(hf_name, config.hf_kwargs, key)
    function = dataset_constructor.resolve(
        config.preprocessing_fn, hf_name, f"{key}.preprocessing_fn"
    )
    source = describe_source(hf_name, config.split, config.hf_kwargs)
    return local_rank_zero_first(
        lambda: _tokenize_and_filter(config, function, tokenizer, source, key), source
    )


def _tokenize_and_filter(
    config: FinetuningDatasetConfig,
    function: PreprocessingFn | None,
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    key: str,
) -> tuple[datasets.Dataset, list[int]]:
    assert config.hf_name is not None
    raw = load_hf_split(config.hf_name, config.split, config.hf_kwargs, key)
    policy = TargetPolicy.from_config(config.target_prompts, config.target_responses, key)
    max_seq_len = config.max_seq_len
    decoder_only = config.decoder_only_format

    def tokenize_row(row: dict[str, Any], index: int) -> dict[str, Any]:
        where = f"{source}, row {index}"
        example = preprocess_row(function, row, where)
        turns = tokenize_example(example, tokenizer, where)["turns"]
        trainable = is_trainable(turns, policy, max_seq_len) if decoder_only else True
        return {"turns": turns, "_length": example_length(turns), "_trainable": trainable}

    tokenized = raw.map(
        tokenize_row,
        with_indices=True,
        remove_columns=raw.column_names,
        features=_TURN_FEATURES,
        desc="Tokenizing finetuning examples",
    )
    lengths = tokenized["_length"]
    trainable = tokenized["_trainable"]
    truncated = sum(
        1 for n, keep in zip(lengths, trainable, strict=True) if keep and n > max_seq_len
    )
    dropped = len(trainable) - sum(trainable)
    logger.info(
        "%s: %d examples; %d longer than max_seq_len=%d are truncated (their last response is "
        "cut); %d dropped (no target token left within max_seq_len)",
        source,
        len(trainable),
        truncated,
        max_seq_len,
        dropped,
    )
    if dropped == len(trainable):
        raise DatasetError(
            f"{source}: all {dropped} examples were dropped (their prompts fill "
            f"max_seq_len={max_seq_len} or they have no target token); raise {key}.max_seq_len"
        )
    kept = tokenized.filter(lambda keep: keep, input_columns="_trainable")
    kept_lengths = [min(n, max_seq_len) for n, keep in zip(lengths, trainable, strict=True) if keep]
    return kept.remove_columns(["_length", "_trainable"]), kept_lengths


def preprocess_row(
    function: PreprocessingFn | None, row: Mapping[str, Any], where: str
) -> Mapping[str, Any]:
    """``function(row)`` (or ``row`` itself without a function), checked to return a mapping.

    Args:
        function: the preprocessing function, or None.
        row: the dataset's row.
        where: the row's source and number, for messages.

    Raises:
        DatasetError: naming ``where`` if the function fails or returns something else.
    """
    if function is None:
        return row
    name = getattr(function, "__name__", repr(function))
    try:
        example = function(row)
    except KeyError as err:
        raise DatasetError(
            f"{where}: preprocessing function {name} needs field {err} "
            f"(fields: {', '.join(row)}); fix the data or dataset.preprocessing_fn"
        ) from err
    except Exception as err:
        # The user's function failed on this row (e.g. a field JSON loading filled with None).
        raise DatasetError(
            f"{where}: preprocessing function {name} failed ({type(err).__name__}: {err}); "
            "fix the row or make the function handle it"
        ) from err
    if not isinstance(example, Mapping):
        raise DatasetError(
            f"{where}: preprocessing function {name} returned {type(example).__name__}, not a "
            "dict with 'prompt'/'response' or 'messages'"
        )
    return example


class StreamingFinetuningDataset(StreamingTextDataset):
    """Finetuning examples from MDS (see the module docstring for the column layout).

    Takes :class:`~llmfoundry.data.text_data.StreamingTextDataset`'s arguments; ``tokenizer``
    is needed for text columns.
    """

    def __getitem__(self, idx: int) -> dict[str, Any]:  # type: ignore[override]
        """Sample ``idx`` as ``{'turns': [...]}``.

        Raises:
            DatasetError: if the sample has none of the supported column sets, a malformed
                ``turns`` column, or bad text (naming the sample).
        """
        sample = self._read_sample(idx)
        where = f"MDS sample {idx}"
        if "turns" in sample:
            return {"turns": check_turns(sample["turns"], where)}
        if "input_ids" in sample and "labels" in sample:
            prompt = self._token_list(sample["input_ids"])
            response = self._token_list(sample["labels"])
            return {"turns": [{"input_ids": prompt, "labels": response}]}
        if any(k in sample for k in ("prompt", "response", "messages")):
            if self.tokenizer is None:
                raise ConfigError("MDS text columns need a tokenizer; set the run's `tokenizer`")
            example = dict(sample)
            return tokenize_example(example, self.tokenizer, where)
        raise DatasetError(
            f"{where} has columns {', '.join(sample)}; finetuning MDS needs 'input_ids' and "
            "'labels' (token ids), 'turns' (tokenized chat turns), 'prompt' and 'response' "
            "(text) or 'messages'"
        )

    def _token_list(self, value: np.ndarray | bytes) -> list[int]:
        if isinstance(value, bytes):
            value = np.frombuffer(value, dtype=self.token_encoding_type)
        return [int(x) for x in value]


def check_turns(value: Any, where: str) -> list[Turn]:
    """Check a ``turns`` value: a non-empty list of ``{'input_ids': [...], 'labels': [...]}``.

    Token ids are non-negative integers; a turn's ``labels`` (its response) is not empty, its
    ``input_ids`` (prompt) may be.

    Args:
        value: the decoded ``turns`` column.
        where: the sample, for messages (``MDS sample 3``).

    Returns:
        The turns, as lists of ``int``.

    Raises:
        DatasetError: naming the sample, the turn and what is wrong, on one line.
    """
    fix = "re-convert it with convert_finetuning_dataset"
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else type(value).__name__
        raise DatasetError(
            f"{where}: column 'turns' must be a non-empty list of {{'input_ids', 'labels'}} "
            f"turns, got {got}; {fix}"
        )
    turns: list[Turn] = []
    for number, turn in enumerate(value):
        if not isinstance(turn, dict) or set(turn) != {"input_ids", "labels"}:
            got = f"keys {sorted(turn)}" if isinstance(turn, dict) else type(turn).__name__
            raise DatasetError(
                f"{where}: turn {number} of column 'turns' must be a dict with exactly "
                f"'input_ids' and 'labels', got {got}; {fix}"
            )
        checked: Turn = {}
        for field_name in ("input_ids", "labels"):
            tokens = turn[field_name]
            if not isinstance(tokens, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens
            ):
                raise DatasetError(
                    f"{where}: turn {number} '{field_name}' of column 'turns' must be a list of "
                    f"non-negative integer token ids; {fix}"
                )
            checked[field_name] = tokens
        if not checked["labels"]:
            raise DatasetError(
                f"{where}: turn {number} of column 'turns' has empty 'labels' (no response); {fix}"
            )
        turns.append(checked)
    return turns


def build_finetuning_dataloader(
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: int,
    dataset: Mapping[str, Any],
    drop_last: bool = True,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    persistent_workers: bool | None = None,
    timeout: float = 0,
    *,
    section: str = "train_loader",
) -> DataSpec:
    """Build a ``finetuning`` loader section (see the module docstring).

    Args:
        tokenizer: the run's tokenizer (tokenizes text; its pad id pads batches).
        device_batch_size: rows per batch on this device.
        dataset: the ``dataset:`` keys (:class:`FinetuningDatasetConfig`, plus MDS keys).
        drop_last: drop the last incomplete batch.
        num_workers: data loader worker processes (0 loads in the main process).
        pin_memory: pin batches in page-locked memory.
        prefetch_factor: batches loaded ahead per worker (default 2; with 0 workers it does not
            apply and is dropped with one logged note).
        persistent_workers: keep workers alive between epochs (default True; dropped, with a
            note, with 0 workers).
        timeout: seconds to wait for a batch from a worker (0: forever).
        section: the loader's key path, for messages (``train_loader``, ``eval_loader``).

    Returns:
        A ``DataSpec`` counting non-padding tokens per batch.

    Raises:
        ConfigError: naming a bad ``dataset`` key or value.
        DatasetError, MissingFileError: on missing or malformed data.
    """
    key = f"{section}.dataset"
    config = parse_dataset_config(dataset, key)
    collator = Seq2SeqFinetuningCollator(
        pad_token_id=pad_token_id_of(tokenizer),
        max_seq_len=config.max_seq_len,
        target_prompts=config.target_prompts,
        target_responses=config.target_responses,
        decoder_only_format=config.decoder_only_format,
        allow_pad_trimming=config.allow_pad_trimming,
        # HF examples were counted and filtered when loaded; MDS ones are counted as collated.
        track_truncation=config.hf_name is None,
    )
    if config.hf_name is not None:
        examples, lengths = build_hf_finetuning_dataset(config, tokenizer, key)
        ratio = _packing_ratio(
            config, device_batch_size, lambda: _sample(lengths, device_batch_size)
        )
        examples_per_batch = _examples_per_batch(ratio, device_batch_size)
        # An HF ``datasets.Dataset`` is map-style (``__getitem__``/``__len__``) for torch.
        torch_dataset: Dataset[Any] = examples  # type: ignore[assignment]
        sampler = dist.get_sampler(torch_dataset, drop_last=drop_last, shuffle=config.shuffle)
    else:
        streaming = dict(config.streaming)
        if streaming.get("streams") is not None:
            streaming["streams"] = build_streams(streaming["streams"], f"{key}.streams")
        ratio = config.packing_ratio
        if ratio == "auto":
            # Profiling reads a sample first; the dataset is then rebuilt with the batch size.
            probe = StreamingFinetuningDataset(
                tokenizer=tokenizer, max_seq_len=config.max_seq_len, split=config.split, **streaming
            )
            ratio = _packing_ratio(
                config, device_batch_size, lambda: _mds_lengths(probe, collator, device_batch_size)
            )
        examples_per_batch = _examples_per_batch(ratio, device_batch_size)
        torch_dataset = StreamingFinetuningDataset(
            tokenizer=tokenizer,
            max_seq_len=config.max_seq_len,
            split=config.split,
            shuffle=config.shuffle,
            batch_size=examples_per_batch,
            **streaming,
        )
        sampler = None
    collate_fn: Callable[[Any], Any] = collator
    if examples_per_batch > device_batch_size:
        collate_fn = BinPackCollator(collator, device_batch_size, config.max_leftover_bins_to_keep)
    worker_kwargs = worker_process_kwargs(num_workers, prefetch_factor, persistent_workers, section)
    loader = DataLoader(
        torch_dataset,
        batch_size=examples_per_batch,
        collate_fn=collate_fn,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        # Pinning needs an accelerator; without one torch warns on every loader.
        pin_memory=pin_memory and torch.cuda.is_available(),
        timeout=timeout,
        **worker_kwargs,
    )
    return DataSpec(loader, get_num_tokens_in_batch=count_tokens_in_batch)


def _packing_ratio(
    config: FinetuningDatasetConfig, device_batch_size: int, sample: Callable[[], list[int]]
) -> float:
    if config.packing_ratio is None:
        return 1.0
    if config.packing_ratio == "auto":
        return auto_packing_ratio(sample(), device_batch_size, config.max_seq_len)
    return float(config.packing_ratio)


def _examples_per_batch(ratio: float | str | None, device_batch_size: int) -> int:
    assert not isinstance(ratio, str)
    return max(device_batch_size, int((ratio or 1.0) * device_batch_size))


def _sample(lengths: list[int], device_batch_size: int) -> list[int]:
    """A seeded random sample of example lengths for ``packing_ratio: auto``."""
    size = min(len(lengths), AUTO_PACKING_SAMPLE_PER_ROW * device_batch_size)
    return random.Random(0).sample(lengths, size)


def _mds_lengths(
    dataset: StreamingFinetuningDataset, collator: Seq2SeqFinetuningCollator, device_batch_size: int
) -> list[int]:
    size = min(len(dataset), AUTO_PACKING_SAMPLE_PER_ROW * device_batch_size)
    indices = random.Random(0).sample(range(len(dataset)), size)
    return [len(collator.sequence(dataset[i])[0]) for i in indices]
