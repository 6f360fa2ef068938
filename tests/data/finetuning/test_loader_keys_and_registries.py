"""LLM Foundry's loader keys and registries: ``pad_to_longest``, the replication keys, and the
``dataset_replication_validators``, ``collators`` and ``data_specs`` entries the loaders use."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from composer.core import DataSpec
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.data import build_text_dataloader, write_mds
from llmfoundry.data.finetuning import build_finetuning_dataloader
from llmfoundry.data.utils import get_finetuning_collator, validate_ds_replication
from llmfoundry.utils.exceptions import ConfigError
from tests.data.finetuning.loader_cases import EOS, PAD, json_dataset
from tests.data.finetuning.loader_cases import ROWS as LOADER_ROWS

ROWS = [LOADER_ROWS[i] for i in (0, 1, 3, 4)]


@contextmanager
def registered(reg: registry.Registry[Any], name: str, func: Callable[..., Any]) -> Iterator[None]:
    """``func`` as the ``name`` entry of ``reg`` (as a plug-in would register it), then back."""
    original = reg.get(name)
    reg.register(name, func=func)
    try:
        yield
    finally:
        reg.register(name, func=original)


def ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def test_pad_to_longest_pads_each_batch_to_its_longest_example(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    dataset = json_dataset(tmp_path, ROWS[:2], pad_to_longest=True)
    batch = next(iter(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader))
    first = ids(tokenizer, ROWS[0]["prompt"]) + ids(tokenizer, ROWS[0]["response"]) + [EOS]
    second = ids(tokenizer, ROWS[1]["prompt"]) + ids(tokenizer, ROWS[1]["response"]) + [EOS]
    width = max(len(first), len(second))
    assert batch["input_ids"].tolist() == [
        first + [PAD] * (width - len(first)),
        second + [PAD] * (width - len(second)),
    ]
    unpadded = build_finetuning_dataloader(tokenizer, 2, {**dataset, "pad_to_longest": False})
    assert next(iter(unpadded.dataloader))["input_ids"].shape == (2, 32)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"seq_parallel_replication": 2},
            r"train_loader\.dataset\.seq_parallel_replication is 2, but sequence parallelism is "
            r"not implemented; set it to 1",
        ),
        (
            {"auto_packing_replication": 0},
            r"auto_packing_replication must be a positive int or null, got int 0",
        ),
        ({"replication": 2}, r"replication factor 2 does not divide the 1 processes"),
        (
            {"pad_to_longest": "yes"},
            r"pad_to_longest must be bool \(true or false\), got str 'yes'",
        ),
        ({"max_leftover_bins_to_keep": 1}, r"max_leftover_bins_to_keep applies to packing only"),
    ],
)
def test_replication_and_padding_keys_are_checked(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, keys: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_finetuning_dataloader(tokenizer, 2, json_dataset(tmp_path, ROWS, **keys))


def test_llm_foundry_replication_defaults_are_accepted(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    keys = {"replication": 1, "seq_parallel_replication": 1, "auto_packing_replication": 1}
    spec = build_finetuning_dataloader(tokenizer, 2, json_dataset(tmp_path, ROWS, **keys))
    assert [b["input_ids"].shape[0] for b in spec.dataloader] == [2, 2]
    # The built-in validator: (replication, rows per batch).
    assert validate_ds_replication({"replication": 1}, tokenizer, 3) == (1, 3)


def test_a_plugin_validator_sets_the_rows_and_sees_the_profiling_config(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """A sequence-parallel plug-in: ``seq_parallel_replication`` r makes batches of r x rows,
    and ``packing_ratio: auto`` profiles with ``auto_packing_replication`` standing in for it."""
    seen: list[dict[str, Any]] = []

    def seq_parallel(
        dataset_cfg: dict[str, Any], tokenizer: Any, device_batch_size: int
    ) -> tuple[int, int]:
        seen.append(dict(dataset_cfg))
        factor = dataset_cfg.get("seq_parallel_replication") or 1
        if factor == 1:
            factor = dataset_cfg.get("auto_packing_replication") or 1
        return 1, device_batch_size * factor

    rows = [{"prompt": "a", "response": "b"}] * 24
    dataset = json_dataset(tmp_path, rows, seq_parallel_replication=2)
    with registered(
        registry.dataset_replication_validators, "dataset_replication_validator", seq_parallel
    ):
        plain = build_finetuning_dataloader(tokenizer, 1, dataset)
        assert [b["input_ids"].shape[0] for b in plain.dataloader] == [2] * 12
        seen.clear()
        packed = build_finetuning_dataloader(
            tokenizer, 1, {**dataset, "packing_ratio": "auto"}, drop_last=True
        )
    actual, profile = seen
    assert (profile["seq_parallel_replication"], profile["auto_packing_replication"]) == (1, 2)
    assert profile["pad_to_longest"] is True
    assert actual["seq_parallel_replication"] == 2
    # Each 3-token example ("a", "b", EOS) packs 10 to a 32-token row: profiled on 2 rows,
    # the ratio is 10, so a batch takes 20 of the 24 examples (the rest is dropped as last).
    assert len(ids(tokenizer, "a") + ids(tokenizer, "b")) + 1 == 3
    batches = list(packed.dataloader)
    assert len(batches) == 1
    assert batches[0]["input_ids"].shape == (2, 32)
    assert batches[0]["attention_mask"].sum(dim=1).tolist() == [30, 30]
    assert batches[0]["sequence_id"].max(dim=1).values.tolist() == [9, 9]


def test_a_plugin_collator_and_data_spec_replace_the_built_in_ones(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    calls: list[tuple[str, int]] = []

    def tagging_collator(
        dataloader_cfg: dict[str, Any], tokenizer: Any, dataset_batch_size: int
    ) -> tuple[Callable[[Any], Any], int]:
        calls.append((dataloader_cfg["name"], dataset_batch_size))
        base, size = get_finetuning_collator(dataloader_cfg, tokenizer, dataset_batch_size)

        def collate(examples: Any) -> dict[str, torch.Tensor]:
            batch = base(examples)
            batch["tag"] = torch.full((batch["input_ids"].shape[0],), 7)
            return batch

        return collate, size

    def counting_spec(dl: Any, dataset_cfg: Mapping[str, Any]) -> DataSpec:
        return DataSpec(dl, get_num_tokens_in_batch=lambda batch: 1000)

    dataset = json_dataset(tmp_path, ROWS)
    with (
        registered(registry.collators, "finetuning_collator", tagging_collator),
        registered(registry.data_specs, "data_spec", counting_spec),
    ):
        spec = build_finetuning_dataloader(tokenizer, 2, dataset)
    batch = next(iter(spec.dataloader))
    assert batch["tag"].tolist() == [7, 7]
    assert calls == [("finetuning", 2)]
    assert spec.get_num_tokens_in_batch is not None
    assert spec.get_num_tokens_in_batch(batch) == 1000
    # Back to the built-in entries: no tag, tokens counted.
    built_in = build_finetuning_dataloader(tokenizer, 2, dataset)
    assert "tag" not in next(iter(built_in.dataloader))


def test_the_text_loader_uses_the_same_registries(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    samples = [{"tokens": np.arange(2, 2 + n, dtype=np.int32)} for n in (4, 6, 5, 3)]
    write_mds(samples, str(tmp_path / "mds"), {"tokens": "ndarray:int32"}, None)
    dataset = {"local": str(tmp_path / "mds"), "max_seq_len": 8, "shuffle": False}

    def reversing_collator(
        dataloader_cfg: dict[str, Any], tokenizer: Any, dataset_batch_size: int
    ) -> tuple[Callable[[Any], Any], int]:
        assert dataloader_cfg["name"] == "text"
        return (lambda samples: {"input_ids": torch.stack([s[:3].flip(0) for s in samples])}), (
            dataset_batch_size
        )

    def three_rows(dataset_cfg: Any, tokenizer: Any, device_batch_size: int) -> tuple[int, int]:
        return 1, 3

    with (
        registered(registry.collators, "text_collator", reversing_collator),
        registered(
            registry.dataset_replication_validators, "dataset_replication_validator", three_rows
        ),
    ):
        spec = build_text_dataloader(tokenizer, 2, dataset, num_workers=0, drop_last=True)
        batches = list(spec.dataloader)
    assert [b["input_ids"].tolist() for b in batches] == [[[4, 3, 2], [4, 3, 2], [4, 3, 2]]]
    # The built-in validator refuses sequence parallelism in text loaders too.
    with pytest.raises(ConfigError, match=r"seq_parallel_replication is 4"):
        build_text_dataloader(tokenizer, 2, {**dataset, "seq_parallel_replication": 4})
