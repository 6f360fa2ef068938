"""The small MDS writer writes the very files Streaming's ``MDSWriter`` writes, and Streaming
reads them back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streaming import MDSWriter
from streaming.base.compression import decompress
from streaming.base.format import reader_from_json

from llmfoundry.data.data import check_compression, write_mds
from llmfoundry.data.mds_writer import MiniMDSWriter, supports, zstd_level

TOKENS = [np.arange(n, dtype=np.int32) * 7 - 3 for n in (1, 5, 300, 2, 70_000, 9)]
TEXTS = ["", "plain", "unicode: é ü 漢字 🙂", 'line\nbreaks\tand "quotes"', "x" * 5000]
TURNS = [
    [{"input_ids": [1, 2, 3], "labels": [4, 5]}],
    [{"input_ids": [], "labels": [9]}, {"input_ids": [7, 8], "labels": [10, 11, 12]}],
    [{"input_ids": list(range(1000)), "labels": [0]}],
]

CASES: dict[str, tuple[dict[str, str], list[dict[str, Any]]]] = {
    "tokens": ({"tokens": "ndarray:int32"}, [{"tokens": t} for t in TOKENS]),
    "text": ({"text": "str"}, [{"text": t} for t in TEXTS]),
    "turns": ({"turns": "json"}, [{"turns": t} for t in TURNS]),
    "prompt_response": (
        {"response": "str", "prompt": "str"},
        [{"prompt": t, "response": t[::-1]} for t in TEXTS],
    ),
    "mixed": (
        {"text": "str", "tokens": "ndarray:int32", "meta": "json"},
        [
            {"text": s, "tokens": t, "meta": {"n": len(s)}}
            for s, t in zip(TEXTS, TOKENS[:5], strict=True)
        ],
    ),
}


def _write_both(
    tmp_path: Path,
    columns: Mapping[str, str],
    samples: list[dict[str, Any]],
    compression: str | None,
    size_limit: int | None,
) -> tuple[Path, Path]:
    theirs, ours = tmp_path / "streaming", tmp_path / "ours"
    with MDSWriter(
        out=str(theirs), columns=dict(columns), compression=compression, size_limit=size_limit
    ) as writer:
        for sample in samples:
            writer.write(sample)
    with MiniMDSWriter(str(ours), columns, compression, size_limit) as mine:
        for sample in samples:
            mine.write(sample)
    return theirs, ours


def _assert_same_files(theirs: Path, ours: Path) -> list[str]:
    names = sorted(p.name for p in theirs.iterdir())
    assert sorted(p.name for p in ours.iterdir()) == names
    for name in names:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    return names


def _read_back(folder: Path) -> list[dict[str, Any]]:
    index = json.loads((folder / "index.json").read_text())
    samples = []
    for shard in index["shards"]:
        if shard["zip_data"] is not None:  # as StreamingDataset does on download
            packed = (folder / shard["zip_data"]["basename"]).read_bytes()
            raw = decompress(shard["compression"], packed)
            (folder / shard["raw_data"]["basename"]).write_bytes(raw)
        reader = reader_from_json(str(folder), None, shard)
        samples += [reader.get_item(i) for i in range(shard["samples"])]
    return samples


def _assert_same_samples(read: list[dict[str, Any]], written: list[dict[str, Any]]) -> None:
    assert len(read) == len(written)
    for got, want in zip(read, written, strict=True):
        assert set(got) == set(want)
        for key, value in want.items():
            if isinstance(value, np.ndarray):
                assert got[key].dtype == value.dtype
                np.testing.assert_array_equal(got[key], value)
            else:
                assert got[key] == value


@pytest.mark.parametrize("compression", [None, "zstd", "zstd:7"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_files_as_streaming_and_read_back(
    tmp_path: Path, case: str, compression: str | None
) -> None:
    columns, samples = CASES[case]
    theirs, ours = _write_both(tmp_path, columns, samples, compression, 1 << 26)
    names = _assert_same_files(theirs, ours)
    suffix = ".mds.zstd" if compression else ".mds"
    assert names == ["index.json", f"shard.00000{suffix}"]
    _assert_same_samples(_read_back(ours), samples)


@pytest.mark.parametrize("compression", [None, "zstd:7"])
def test_shards_split_at_the_size_limit_as_streaming_does(
    tmp_path: Path, compression: str | None
) -> None:
    columns, samples = CASES["mixed"]
    many = samples * 4
    # 200 bytes is less than the shard header: Streaming then writes a shard of no samples first,
    # and one shard per sample after. The 280 kB token array takes a shard of its own at 20 kB.
    for size_limit in (200, 20_000, None):
        folder = tmp_path / str(size_limit)
        theirs, ours = _write_both(folder, columns, many, compression, size_limit)
        names = _assert_same_files(theirs, ours)
        index = json.loads((ours / "index.json").read_text())
        counts = [shard["samples"] for shard in index["shards"]]
        assert sum(counts) == len(many) and len(names) == len(counts) + 1
        assert counts == {200: [0] + [1] * 20, 20_000: [4, 1] * 4, None: [20]}[size_limit]
        _assert_same_samples(_read_back(ours), many)


def test_nothing_written_gives_an_index_of_no_shards(tmp_path: Path) -> None:
    theirs, ours = _write_both(tmp_path, {"text": "str"}, [], "zstd", 1 << 26)
    assert _assert_same_files(theirs, ours) == ["index.json"]
    assert json.loads((ours / "index.json").read_text()) == {"shards": [], "version": 2}


def test_refuses_a_folder_with_files_and_bad_values(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"Directory is not empty: .*full"):
        MiniMDSWriter(str(tmp_path / "full"), {"text": "str"})
    with pytest.raises(FileExistsError, match=r"Directory is not empty"):
        write_mds([{"text": "a"}], str(tmp_path / "full"), {"text": "str"}, None)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with MiniMDSWriter(str(tmp_path / "bad"), {"tokens": "ndarray:int32"}) as writer:
        with pytest.raises(ValueError, match="no elements"):
            writer.write({"tokens": np.zeros(0, dtype=np.int32)})
        with pytest.raises(ValueError, match="needs dtype int32, got int64"):
            writer.write({"tokens": np.zeros(3, dtype=np.int64)})
        with pytest.raises(TypeError, match="needs a numpy array, got list"):
            writer.write({"tokens": [1, 2]})


def test_write_mds_uses_it_where_it_can_and_streaming_elsewhere(tmp_path: Path) -> None:
    assert supports("out", {"tokens": "ndarray:int32"}, "zstd:22")
    assert supports("out", {"turns": "json", "text": "str"}, None)
    assert not supports("s3://bucket/out", {"text": "str"}, None)
    assert not supports("out", {"text": "str"}, "gz")
    assert not supports("out", {"n": "int"}, None)
    assert not supports("out", {"image": "ndarray:int32:4,4"}, None)
    assert [zstd_level(c) for c in ("zstd", "zstd:1", "zstd:22", "zstd:0", "zstd:03", "gz")] == [
        3,
        1,
        22,
        None,
        None,
        None,
    ]
    assert [check_compression(c) for c in ("zstd", "zstd:9", "gz:6", "snappy", "NONE")] == [
        "zstd",
        "zstd:9",
        "gz:6",
        "snappy",
        None,
    ]
    samples = [{"text": t} for t in TEXTS]
    write_mds(samples, str(tmp_path / "gz"), {"text": "str"}, "gz")  # Streaming's writer
    assert sorted(p.name for p in (tmp_path / "gz").iterdir()) == [
        "index.json",
        "shard.00000.mds.gz",
    ]
    _assert_same_samples(_read_back(tmp_path / "gz"), samples)
