"""The ``dataset:`` section of a ``finetuning`` loader: its keys, their defaults and checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from llmfoundry import registry
from llmfoundry.data.finetuning.turns import TargetPolicy
from llmfoundry.utils.config_checks import (
    NonNegativeInt,
    PositiveInt,
    check_fields,
    declared_hints,
)
from llmfoundry.utils.config_components import accepted_kwargs
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.registry_utils import check_keys


@dataclass
class FinetuningDatasetConfig:
    """The ``dataset:`` keys of a ``finetuning`` loader (besides the MDS ones).

    Attributes:
        max_seq_len: the longest sequence, in tokens (required).
        hf_name: a Hugging Face dataset (hub id, local folder or builder such as ``json``).
        hf_kwargs: extra keyword arguments of ``datasets.load_dataset`` (``data_files``, ...).
        split: the split to read (an HF split, or the MDS sub-folder).
        preprocessing_fn: ``"package.module:function"``, a registered name, or the columns
            holding the prompt and the response (``{prompt: text, response: summary}``); None
            uses the function registered for ``hf_name``, if any.
        allow_pad_trimming: trim each batch after the first to its longest example, rounded up
            to a multiple of 8.
        pad_to_longest: pad each batch to its longest example instead of ``max_seq_len``.
        decoder_only_format: one sequence per example (False: encoder-decoder batches).
        shuffle: shuffle the examples.
        target_prompts: ``none``, ``all`` or ``length>=N`` (which prompts are loss targets).
        target_responses: ``last`` or ``all`` (which responses are loss targets).
        packing_ratio: examples per row to pack (a number >= 1), ``auto``, or None (no packing).
        max_leftover_bins_to_keep: when packing, how many bins of examples that did not fit
            a batch to carry over to the next (None: all; see :mod:`.packing`).
        safe_load: allow only local data that runs no code when loaded (see
            :mod:`.hf_source`); no effect on MDS sources, which never run code.
        replication: how many consecutive ranks read the same examples (tensor parallelism);
            it must divide the number of processes.
        seq_parallel_replication: ranks that split one batch's sequences (sequence
            parallelism); the built-in ``dataset_replication_validator`` accepts only 1.
        auto_packing_replication: the ``seq_parallel_replication`` that ``packing_ratio:
            auto`` profiles for; the replication validator sees it (with
            ``seq_parallel_replication: 1``) when the profiler asks how many rows a batch has.
        eos_token_id, bos_token_id: LLM Foundry's keys, only checked against the tokenizer's
            ids (by the built-in replication validator) unless
            ``override_eos_token_id_mismatch_error`` / ``override_bos_token_id_mismatch_error``.
        streaming: the remaining keys, for ``StreamingFinetuningDataset`` (MDS sources).
    """

    max_seq_len: PositiveInt
    hf_name: str | None = None
    hf_kwargs: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    preprocessing_fn: str | dict[str, str] | None = None
    allow_pad_trimming: bool = False
    pad_to_longest: bool = False
    decoder_only_format: bool = True
    shuffle: bool = True
    target_prompts: str = "none"
    target_responses: str = "last"
    packing_ratio: float | str | None = None
    max_leftover_bins_to_keep: NonNegativeInt | None = None
    safe_load: bool = False
    replication: PositiveInt | None = None
    seq_parallel_replication: PositiveInt | None = None
    auto_packing_replication: PositiveInt | None = None
    eos_token_id: NonNegativeInt | None = None
    bos_token_id: NonNegativeInt | None = None
    override_eos_token_id_mismatch_error: bool = False
    override_bos_token_id_mismatch_error: bool = False
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
    # Streaming: only to build a loader.
    from llmfoundry.data.mds_dataset import check_dataset_options
    from llmfoundry.data.text_data import StreamingTextDataset

    own = {f.name for f in fields(FinetuningDatasetConfig)} - {"streaming"}
    streaming_keys = (accepted_kwargs(StreamingTextDataset) or set()) - {
        "tokenizer",
        "batch_size",
        *own,
    }
    check_keys(dataset, own | streaming_keys, key)
    if dataset.get("max_seq_len") is None:
        raise ConfigError(f"{key}.max_seq_len is missing; set the longest sequence in tokens")
    given = {k: v for k, v in dataset.items() if k in own and v is not None}  # null: the default
    check_fields(given, declared_hints(FinetuningDatasetConfig), key)
    streaming = {k: v for k, v in dataset.items() if k in streaming_keys}
    check_dataset_options(streaming, key)
    config = FinetuningDatasetConfig(**given, streaming=streaming)
    _check_source(config, key)
    if config.preprocessing_fn is not None:  # an import path or name that resolves to nothing
        registry.dataset_constructor.resolve(
            config.preprocessing_fn, config.hf_name, f"{key}.preprocessing_fn"
        )
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
    # Leftover bins carried to the next batch; null keeps them all.
    if config.max_leftover_bins_to_keep is not None and config.packing_ratio is None:
        raise ConfigError(
            f"{key}.max_leftover_bins_to_keep applies to packing only; set {key}.packing_ratio "
            "or remove it"
        )
    return config


def _check_source(config: FinetuningDatasetConfig, key: str) -> None:
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
    config.hf_kwargs = dict(config.hf_kwargs)


def _check_packing_ratio(value: Any, key: str) -> None:
    if value is None or value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise ConfigError(f"{key} is {value!r}; use a number >= 1, auto, or null (no packing)")
