"""Fixtures and helpers of the data tests: an in-process S3 (moto) for object-store folders, a
chat-template tokenizer, and reading MDS folders and finetuning loaders back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from moto import mock_aws
from streaming import StreamingDataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from llmfoundry.data.finetuning import build_finetuning_dataloader

BUCKET = "corpus-bucket"
# A chat template that marks each role and ends every message with the EOS token.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


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


@pytest.fixture(scope="session")
def chat_tokenizer_dir(
    tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path
) -> tuple[Path, PreTrainedTokenizerBase]:
    """The fixture tokenizer with ``CHAT_TEMPLATE``, saved to a folder; the folder and tokenizer."""
    folder = tmp_path_factory.mktemp("chat-tokenizer")
    chat_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    chat_tokenizer.chat_template = CHAT_TEMPLATE
    chat_tokenizer.save_pretrained(str(folder))
    return folder, chat_tokenizer
