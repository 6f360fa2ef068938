"""Broken MDS folders given to the streaming text dataset and to a ``text`` train loader: each
fails with one :class:`DatasetError` line naming the file (index or shard) and what to do,
instead of Streaming's ``JSONDecodeError``/``KeyError``, a request for a remote, or an epoch
that ends early."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from streaming import MDSWriter
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.text_data import StreamingTextDataset, build_text_dataloader
from llmfoundry.utils.exceptions import DatasetError

from .cli_case import assert_one_line_message

SAMPLES, SEQ = 48, 16


def _write_mds(folder: Path, compression: str | None = None) -> Path:
    """48 samples of 16 tokens in several small shards (the second one is the one broken)."""
    with MDSWriter(
        out=str(folder),
        columns={"tokens": "ndarray:int32"},
        compression=compression,
        size_limit=1500,
    ) as writer:
        for i in range(SAMPLES):
            writer.write({"tokens": np.arange(i, i + SEQ, dtype=np.int32)})
    return folder


def _second_shard(folder: Path) -> Path:
    index = json.loads((folder / "index.json").read_text())
    shard = index["shards"][1]
    return folder / (shard["zip_data"] or shard["raw_data"])["basename"]


def _overwrite_same_size(path: Path) -> None:
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:4] + b"\x00" * (size - 4))


BREAKAGES: dict[str, tuple[Callable[[Path], object], str, str]] = {
    # name: (how the folder is broken, the file named, what the message says)
    "index not JSON": (
        lambda f: (f / "index.json").write_text('{"version": 2, "shards": ['),
        "index.json",
        "is not valid JSON",
    ),
    "index empty": (lambda f: (f / "index.json").write_text(""), "index.json", "is empty"),
    "index lists no shards": (
        lambda f: (f / "index.json").write_text('{"version": 2, "shards": []}'),
        "index.json",
        "lists no shards",
    ),
    "index not an MDS index": (
        lambda f: (f / "index.json").write_text("[1, 2]"),
        "index.json",
        "is not an MDS index",
    ),
    "index shard entries without files": (
        lambda f: (f / "index.json").write_text('{"version": 2, "shards": [{"x": 1}]}'),
        "index.json",
        "is not an MDS index",
    ),
    "shard missing": (lambda f: _second_shard(f).unlink(), "shard.00001", "is missing"),
    "shard truncated": (
        lambda f: _second_shard(f).write_bytes(_second_shard(f).read_bytes()[:100]),
        "shard.00001",
        "has 100 bytes but its index.json says",
    ),
    "shard overwritten": (
        lambda f: _overwrite_same_size(_second_shard(f)),
        "shard.00001",
        "truncated or corrupted",
    ),
}


def _read_all(folder: Path) -> int:
    dataset = StreamingTextDataset(
        tokenizer=None, max_seq_len=SEQ, local=str(folder), shuffle=False, batch_size=4
    )
    return sum(1 for _ in dataset)


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_streaming_text_dataset_names_the_broken_file(breakage: str, tmp_path: Path) -> None:
    breaks, file, says = BREAKAGES[breakage]
    folder = _write_mds(tmp_path / "mds")
    breaks(folder)
    with pytest.raises(DatasetError) as caught:
        _read_all(folder)
    assert_one_line_message(caught.value, str(folder), file, says)


def test_corrupted_compressed_shard_is_named(tmp_path: Path) -> None:
    folder = _write_mds(tmp_path / "mds", compression="zstd")
    shard = _second_shard(folder)
    assert shard.name.endswith(".zstd")
    _overwrite_same_size(shard)
    with pytest.raises(DatasetError) as caught:
        _read_all(folder)
    assert_one_line_message(
        caught.value, str(shard), "cannot prepare shard", "convert the dataset again"
    )


@pytest.mark.parametrize("breakage", ["index not JSON", "shard missing", "shard truncated"])
def test_train_loader_names_the_broken_file(
    breakage: str, tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    breaks, file, says = BREAKAGES[breakage]
    folder = _write_mds(tmp_path / "data" / "train")
    breaks(folder)
    dataset = {"local": str(tmp_path / "data"), "split": "train", "max_seq_len": SEQ}
    with pytest.raises(DatasetError) as caught:
        spec = build_text_dataloader(tokenizer, 4, dataset, num_workers=0, pin_memory=False)
        for _ in spec.dataloader:
            pass
    assert_one_line_message(caught.value, str(folder), file, says)


def test_a_sound_folder_reads_whole(tmp_path: Path) -> None:
    """The checks pass a good folder, compressed or not, and every sample is read."""
    assert _read_all(_write_mds(tmp_path / "plain")) == SAMPLES
    assert _read_all(_write_mds(tmp_path / "zstd", compression="zstd")) == SAMPLES


def test_missing_split_lists_the_splits(tmp_path: Path) -> None:
    _write_mds(tmp_path / "data" / "train")
    with pytest.raises(DatasetError) as caught:
        StreamingTextDataset(
            tokenizer=None, max_seq_len=SEQ, local=str(tmp_path / "data"), split="val"
        )
    assert_one_line_message(caught.value, "split 'val'", "splits there: train")
    assert re.search(r"convert_text_to_mds\.py", str(caught.value))
