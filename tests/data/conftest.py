"""Fixtures and helpers of the data tests: reading MDS folders and finetuning loaders back, and a
spec's loader and collator, typed. (The in-process S3, ``s3``, is the root conftest's.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import torch
from composer.core import DataSpec
from streaming import StreamingDataset
from streaming.base.util import clean_stale_shared_memory
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning import build_finetuning_dataloader
from tests.fixtures import BUCKET as BUCKET  # the moto bucket of the root conftest's s3 fixture

CollatorT = TypeVar("CollatorT")


@pytest.fixture(scope="module", autouse=True)
def clean_shared_memory() -> None:
    """Clear stale Streaming shared memory once per module, before its first test."""
    clean_stale_shared_memory()


def index_columns(folder: Path) -> tuple[list[str], list[str]]:
    """The column names and encodings an MDS folder's index.json records."""
    shard = json.loads((folder / "index.json").read_text())["shards"][0]
    return shard["column_names"], shard["column_encodings"]


def stored_samples(folder: Path | str) -> list[dict[str, Any]]:
    """The samples of an MDS folder, in order."""
    dataset = StreamingDataset(local=str(folder), shuffle=False, batch_size=1)
    return [dataset[i] for i in range(len(dataset))]


def loader_batches(
    tokenizer: PreTrainedTokenizerBase, dataset: dict[str, Any], batch_size: int = 2
) -> list[dict[str, torch.Tensor]]:
    """Every batch of the finetuning loader built from the ``dataset`` section (last one kept)."""
    spec = build_finetuning_dataloader(tokenizer, batch_size, dataset, drop_last=False)
    return list(spec.dataloader)


def dataloader_of(spec: DataSpec) -> DataLoader[Any]:
    """The spec's ``DataLoader`` (Composer types ``DataSpec.dataloader`` as any iterable)."""
    assert isinstance(spec.dataloader, DataLoader)
    return spec.dataloader


def collator_of(spec: DataSpec, kind: type[CollatorT]) -> CollatorT:
    """The ``collate_fn`` of the spec's loader, checked to be a ``kind``."""
    collate_fn = dataloader_of(spec).collate_fn
    assert isinstance(collate_fn, kind)
    # pyright does not narrow the loader's callable union to a type variable; checked above.
    return cast(CollatorT, collate_fn)
