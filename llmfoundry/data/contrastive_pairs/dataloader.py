"""The ``contrastive_pairs`` loader: each sample is a query, its positive passage and any hard
negative passages, tokenized to ``max_seq_len`` and batched as ``(batch, texts, max_seq_len)``.

An MDS sample holds either ``text_a`` (the query) and ``text_b`` (its passage), or
``query_text``, ``positive_passage`` and ``negative_passages`` (a JSON list of strings), as in
LLM Foundry. Every text gets ``prepend_query``/``prepend_passage`` before it and
``append_token`` (or the tokenizer's EOS with ``append_eos_token``) after it; negatives beyond
``max_hard_negatives`` are dropped (after a shuffle with ``shuffle_hard_negatives``, which is
seeded by ``shuffle_seed`` and the sample index, so the order does not depend on the worker).

Batches have ``input_ids`` and ``attention_mask`` (padded to ``max_seq_len`` on the right) and
no labels; the token count is the number of non-padding tokens. The ``contrastive_lm`` model
(:mod:`llmfoundry.models.llm_embed`) reads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from composer.core import DataSpec
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.mds_dataset import MDSDataset, SampleIndex, check_dataset_options
from llmfoundry.data.text_data import (
    TEXT_LOADER_KEYS,
    check_section_keys,
    dataset_section_keys,
    loader_settings,
    mds_dataset_from_section,
)
from llmfoundry.utils.config_checks import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    check_fields,
    parameter_hints,
)
from llmfoundry.utils.exceptions import ConfigError, DatasetError

__all__ = [
    "StreamingPairsDataset",
    "build_pairs_dataloader",
    "check_pairs_dataset",
    "collate_pairs",
    "contrastive_texts",
]

PAIR_COLUMNS = ("text_a", "text_b")
TRIPLE_COLUMNS = ("query_text", "positive_passage", "negative_passages")
MODEL_INPUTS = ("input_ids", "attention_mask")
# Set by the loader (``max_hard_negatives`` is a loader key in LLM Foundry), not by ``dataset:``.
PAIRS_FIXED = ("max_hard_negatives",)


def contrastive_texts(sample: Mapping[str, Any], idx: int) -> tuple[str, str, list[str]]:
    """A sample's query, positive passage and hard negatives (see the module docstring).

    Raises:
        DatasetError: naming the sample when it has neither column set, or its
            ``negative_passages`` is not a JSON list of strings.
    """
    if all(column in sample for column in PAIR_COLUMNS):
        return str(sample["text_a"]), str(sample["text_b"]), []
    if all(column in sample for column in TRIPLE_COLUMNS):
        negatives = sample["negative_passages"]
        try:
            parsed = json.loads(negatives) if isinstance(negatives, str | bytes) else negatives
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"sample {idx}: negative_passages is not JSON ({err}); write it as a JSON list "
                "of strings"
            ) from err
        if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
            raise DatasetError(f"sample {idx}: negative_passages must be a JSON list of strings")
        return str(sample["query_text"]), str(sample["positive_passage"]), parsed
    raise DatasetError(
        f"sample {idx} has columns {', '.join(sample)}; a contrastive pair needs text_a and "
        "text_b, or query_text, positive_passage and negative_passages"
    )


class StreamingPairsDataset(MDSDataset):
    """Contrastive samples from MDS folders (see the module docstring): ``dataset[i]`` is
    ``{"input_ids": [[...], ...], "attention_mask": [[...], ...]}`` with one row per text
    (query, positive, negatives), each ``max_seq_len`` long.

    Args:
        max_hard_negatives: keep at most this many negatives per sample (None: all).
        prepend_query: text put before each query.
        prepend_passage: text put before each passage.
        append_eos_token: put the tokenizer's EOS token after each text.
        append_token: put this text after each text (not with ``append_eos_token``).
        shuffle_hard_negatives: shuffle a sample's negatives before keeping the first ones.
        **kwargs: :class:`~llmfoundry.data.mds_dataset.MDSDataset`'s arguments; the tokenizer
            is required and must have a pad token.

    Raises:
        ConfigError: on ``append_eos_token`` with ``append_token``, or no tokenizer/pad token.
    """

    def __init__(
        self,
        max_hard_negatives: NonNegativeInt | None = None,
        prepend_query: str = "",
        prepend_passage: str = "",
        append_eos_token: bool = False,
        append_token: str = "",
        shuffle_hard_negatives: bool = False,
        **kwargs: Any,
    ) -> None:
        tokenizer = kwargs.get("tokenizer")
        if not isinstance(tokenizer, PreTrainedTokenizerBase) or tokenizer.pad_token is None:
            raise ConfigError(
                "the contrastive_pairs loader pads every text to max_seq_len and needs a "
                "tokenizer with a pad token (set tokenizer.kwargs.pad_token)"
            )
        if append_eos_token and append_token:
            raise ConfigError("append_eos_token and append_token exclude each other; set one")
        super().__init__(**kwargs)
        self.max_hard_negatives = max_hard_negatives
        self.prepend_query = prepend_query
        self.prepend_passage = prepend_passage
        self.append_token = str(tokenizer.eos_token) if append_eos_token else append_token
        self.shuffle_hard_negatives = shuffle_hard_negatives

    def texts(self, sample: Mapping[str, Any], idx: int) -> list[str]:
        """Sample ``idx``'s texts as tokenized: query, positive passage, kept negatives."""
        query, positive, negatives = contrastive_texts(sample, idx)
        if self.shuffle_hard_negatives:
            np.random.default_rng((self.shuffle_seed, idx)).shuffle(negatives)
        if self.max_hard_negatives is not None:
            negatives = negatives[: self.max_hard_negatives]
        passages = [
            f"{self.prepend_passage}{text}{self.append_token}" for text in [positive, *negatives]
        ]
        return [f"{self.prepend_query}{query}{self.append_token}", *passages]

    def __getitem__(self, at: SampleIndex) -> dict[str, list[list[int]]]:
        idx, sample = self._read_sample(at)
        assert self.tokenizer is not None  # checked in __init__
        encoded = self.tokenizer(
            self.texts(sample, idx),
            truncation=True,
            padding="max_length",
            max_length=self.max_seq_len,
        )
        return {key: [list(row) for row in encoded[key]] for key in MODEL_INPUTS}


def collate_pairs(samples: Sequence[Mapping[str, list[list[int]]]]) -> dict[str, torch.Tensor]:
    """Stack samples into ``(batch, texts, max_seq_len)`` ``input_ids``/``attention_mask``.

    Raises:
        DatasetError: if the samples have different numbers of texts (hard negatives).
    """
    counts = sorted({len(sample["input_ids"]) for sample in samples})
    if len(counts) > 1:
        raise DatasetError(
            f"a contrastive batch mixes samples of {' and '.join(map(str, counts))} texts; give "
            "every sample as many hard negatives, or set max_hard_negatives to the fewest"
        )
    return {key: torch.tensor([sample[key] for sample in samples]) for key in MODEL_INPUTS}


def count_pair_tokens(batch: Mapping[str, torch.Tensor]) -> int:
    """A contrastive batch's non-padding tokens (every text's)."""
    return int(batch["attention_mask"].sum().item())


def check_pairs_dataset(dataset: Mapping[str, Any], path: str) -> None:
    """Check a ``contrastive_pairs`` loader's ``dataset:`` section (at ``path``) before anything
    is built: its keys, and their values against :class:`StreamingPairsDataset`'s annotations
    (the MDS keys as every MDS loader's).

    Raises:
        ConfigError: naming an unknown, missing or mistyped key, or ``eos_token_id`` /
            ``bos_token_id`` (which mark sequence boundaries in packed text, not here).
    """
    for token_key in ("eos_token_id", "bos_token_id"):
        if token_key in dataset:
            raise ConfigError(
                f"{path}.{token_key} is not taken by the contrastive_pairs loader (each text is "
                "its own row); remove it"
            )
    check_section_keys(dataset, dataset_section_keys(StreamingPairsDataset, PAIRS_FIXED), path)
    if dataset.get("append_eos_token") and dataset.get("append_token"):
        raise ConfigError(
            f"{path}.append_eos_token and {path}.append_token exclude each other; set one"
        )
    hints = parameter_hints(StreamingPairsDataset)
    check_fields({k: v for k, v in dataset.items() if k in hints}, hints, path)
    mds = {k: v for k, v in dataset.items() if k not in hints and k not in TEXT_LOADER_KEYS}
    check_dataset_options(mds, path)


def build_pairs_dataloader(
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: int,
    dataset: Mapping[str, Any],
    drop_last: bool,
    num_workers: NonNegativeInt,
    pin_memory: bool = True,
    prefetch_factor: PositiveInt | None = None,
    persistent_workers: bool | None = None,
    timeout: NonNegativeFloat = 0,
    max_hard_negatives: NonNegativeInt | None = None,
    *,
    section: str = "train_loader",
) -> DataSpec:
    """Build a ``contrastive_pairs`` loader section (see the module docstring).

    Args:
        tokenizer: the run's tokenizer (it needs a pad token).
        device_batch_size: samples (queries) per batch on this device.
        dataset: :class:`StreamingPairsDataset`'s keyword arguments (``max_seq_len`` required).
        drop_last, num_workers: required, as in LLM Foundry.
        max_hard_negatives: hard negatives kept per sample (None: all), as LLM Foundry takes it
            at the loader level.
        pin_memory, prefetch_factor, persistent_workers, timeout, section: as
            :func:`~llmfoundry.data.text_data.build_text_dataloader`.

    Raises:
        ConfigError: naming an unknown or missing ``dataset`` key, or ``eos_token_id`` /
            ``bos_token_id`` (which mark sequence boundaries in packed text, not here).
    """
    key = f"{section}.dataset"
    check_pairs_dataset(dataset, key)
    dataset_cfg = dict(dataset)
    pairs, dataset_batch_size = mds_dataset_from_section(
        StreamingPairsDataset,
        dataset_cfg,
        tokenizer,
        device_batch_size,
        key,
        max_hard_negatives=max_hard_negatives,
    )
    settings = loader_settings(
        "contrastive_pairs",
        section,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor,
        persistent_workers=persistent_workers,
        timeout=timeout,
    )
    loader = settings.loader(pairs, dataset_batch_size, collate_pairs)
    return DataSpec(dataloader=loader, get_num_tokens_in_batch=count_pair_tokens)
