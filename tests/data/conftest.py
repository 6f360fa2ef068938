"""Fixtures and helpers of the data tests: an in-process S3 (moto) for object-store folders,
reading MDS folders and finetuning loaders back, and a spec's loader and collator, typed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import boto3
import pytest
import torch
from composer.core import DataSpec
from moto import mock_aws
from streaming import StreamingDataset
from streaming.base.util import clean_stale_shared_memory
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning import build_finetuning_dataloader

BUCKET = "corpus-bucket"
CollatorT = TypeVar("CollatorT")


@pytest.fixture(scope="module", autouse=True)
def clean_shared_memory() -> None:
    """Clear stale Streaming shared memory once per module, before its first test."""
    clean_stale_shared_memory()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A mocked S3 with one empty bucket; yields a boto3 client for it."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    # Streaming's S3 clients use S3_ENDPOINT_URL when set; moto intercepts the default endpoint.
    monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


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
