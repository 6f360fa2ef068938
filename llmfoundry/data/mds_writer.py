"""A small MDS writer for the converters: no torch, no Streaming import.

It writes the same folder, byte for byte, as Streaming's ``MDSWriter(out=local_folder,
columns=..., compression=...)`` with its other settings left at their defaults, for the column
encodings the converters use (``str``, ``json`` and ``ndarray:<dtype>`` without a fixed shape)
and no compression or Zstandard (``zstd``, ``zstd:<level>``).

The MDS layout: each shard file holds ``[sample count: uint32] [offsets: (count + 1) x uint32]
[config: JSON] [samples]``, the offsets counted from the start of the file. A sample is the
``uint32`` byte sizes of its columns (in column-name order) followed by their bytes. A shard is
closed before a sample would take it past ``size_limit`` bytes (4 bytes of offset counted per
sample). ``index.json``, written last, lists each shard with its config and file sizes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["DEFAULT_SIZE_LIMIT", "MiniMDSWriter", "supports"]

DEFAULT_SIZE_LIMIT = 1 << 26
INDEX_BASENAME = "index.json"
ZSTD_DEFAULT_LEVEL = 3
ZSTD_LEVELS = range(1, 23)

# Array element types and their one-byte codes in the MDS ndarray encoding.
_VALUE_DTYPES = (
    "uint8",
    "int8",
    "uint16",
    "int16",
    "float16",
    "uint32",
    "int32",
    "float32",
    "uint64",
    "int64",
    "float64",
)
_SHAPE_DTYPES = (("uint8", 1 << 8), ("uint16", 1 << 16), ("uint32", 1 << 32), ("uint64", 1 << 64))


def zstd_level(compression: str | None) -> int | None:
    """The Zstandard level of ``compression`` (``zstd`` is level 3), or None if it is not one of
    Streaming's names for it (``zstd``, ``zstd:1`` ... ``zstd:22``)."""
    if compression == "zstd":
        return ZSTD_DEFAULT_LEVEL
    prefix, _, level = (compression or "").partition(":")
    if prefix == "zstd" and level in {str(n) for n in ZSTD_LEVELS}:
        return int(level)
    return None


def _supports_encoding(encoding: str) -> bool:
    if encoding in ("str", "json"):
        return True
    name, _, dtype = encoding.partition(":")
    return name == "ndarray" and dtype in _VALUE_DTYPES


def supports(out: str, columns: Mapping[str, str], compression: str | None) -> bool:
    """Whether :class:`MiniMDSWriter` can write this folder (else use Streaming's writer).

    Args:
        out: the output folder; a remote one (``s3://...``) is not supported.
        columns: column name -> MDS encoding.
        compression: None, ``zstd`` or ``zstd:<level>`` are supported.
    """
    if "://" in out or not columns:
        return False
    if compression and zstd_level(compression) is None:
        return False
    return all(_supports_encoding(encoding) for encoding in columns.values())


def _encode_array(value: Any, dtype: str, column: str) -> bytes:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"column '{column}' needs a numpy array, got {type(value).__name__}")
    if value.dtype.name != dtype:
        raise ValueError(f"column '{column}' needs dtype {dtype}, got {value.dtype.name}")
    if value.size == 0:
        raise ValueError(f"column '{column}': MDS cannot store an array with no elements")
    if value.ndim == 0 or value.ndim >= 64:
        raise ValueError(f"column '{column}': MDS stores arrays of 1 to 63 axes, got {value.ndim}")
    largest = max(value.shape)
    code, shape_dtype = next(
        (code, name) for code, (name, bound) in enumerate(_SHAPE_DTYPES) if largest < bound
    )
    shape = np.array(value.shape, dtype=shape_dtype).tobytes()
    return bytes([(value.ndim << 2) | code]) + shape + value.tobytes()


def encode_value(value: Any, encoding: str, column: str) -> bytes:
    """One column's bytes in a sample, as MDS encodes ``value`` (bytes are stored as given)."""
    if isinstance(value, bytes):
        return value
    if encoding == "str":
        if not isinstance(value, str):
            raise TypeError(f"column '{column}' needs a str, got {type(value).__name__}")
        return value.encode("utf-8")
    if encoding == "json":
        if isinstance(value, np.ndarray):
            value = value.tolist()
        return json.dumps(value).encode("utf-8")
    return _encode_array(value, encoding.partition(":")[2], column)


class MiniMDSWriter:
    """Writes samples to a new local MDS folder; use as a context manager.

    On leaving the ``with`` block normally the last shard and ``index.json`` are written; on an
    exception nothing more is written (no index, so the folder is not a dataset).

    Args:
        out: the output folder (created; must be absent or empty).
        columns: column name -> encoding (``str``, ``json``, ``ndarray:<dtype>``).
        compression: None, ``zstd`` or ``zstd:<level>``.
        size_limit: bytes per shard before a new one is started, or None for one shard.

    Raises:
        ValueError: on an encoding or compression this writer does not support.
        FileExistsError: if ``out`` has files (Streaming's message).
    """

    def __init__(
        self,
        out: str,
        columns: Mapping[str, str],
        compression: str | None = None,
        size_limit: int | None = DEFAULT_SIZE_LIMIT,
    ) -> None:
        compression = compression or None
        if not supports(out, columns, compression):
            raise ValueError(
                f"MiniMDSWriter cannot write {out} with columns {dict(columns)} and compression "
                f"{compression}; use streaming.MDSWriter"
            )
        self.out = out
        self.names = sorted(columns)
        self.encodings = [columns[name] for name in self.names]
        self.compression = compression
        self.level = zstd_level(compression)
        self.size_limit = size_limit or None
        config = {
            "column_encodings": self.encodings,
            "column_names": self.names,
            "column_sizes": [None] * len(self.names),
            "compression": compression,
            "format": "mds",
            "hashes": [],
            "size_limit": self.size_limit,
            "version": 2,
        }
        self.config = config
        self.config_bytes = json.dumps(config, sort_keys=True).encode("utf-8")
        self.shards: list[dict[str, Any]] = []
        self.samples: list[bytes] = []
        self.shard_size = 0
        if os.path.exists(out) and os.listdir(out):
            raise FileExistsError(f"Directory is not empty: {out}")
        os.makedirs(out, exist_ok=True)
        self._start_shard()

    def _start_shard(self) -> None:
        self.samples = []
        self.shard_size = 4 + 4 + len(self.config_bytes)

    def encode_sample(self, sample: Mapping[str, Any]) -> bytes:
        """A sample's bytes: its column sizes (uint32) then the columns' bytes."""
        data = [
            encode_value(sample[name], encoding, name)
            for name, encoding in zip(self.names, self.encodings, strict=True)
        ]
        sizes = np.array([len(datum) for datum in data], dtype=np.uint32).tobytes()
        return sizes + b"".join(data)

    def write(self, sample: Mapping[str, Any]) -> None:
        """Add a sample, first closing the current shard if the sample would overflow it."""
        encoded = self.encode_sample(sample)
        size = len(encoded) + 4
        # As Streaming does, even when the shard is still empty (a shard of no samples).
        if self.size_limit and self.size_limit < self.shard_size + size:
            self.flush_shard()
            self._start_shard()
        self.samples.append(encoded)
        self.shard_size += size

    def flush_shard(self) -> None:
        """Write the samples held so far as the next shard (Streaming also writes an empty one)."""
        count = len(self.samples)
        header = 4 + 4 * (count + 1) + len(self.config_bytes)
        sizes = np.fromiter((len(s) for s in self.samples), dtype=np.int64, count=count)
        offsets = np.concatenate(([0], np.cumsum(sizes))) + header
        head = np.uint32(count).tobytes() + offsets.astype(np.uint32).tobytes() + self.config_bytes
        raw = head + b"".join(self.samples)
        raw_name = f"shard.{len(self.shards):05}.mds"
        raw_info = {"basename": raw_name, "bytes": len(raw), "hashes": {}}
        zip_info = None
        data = raw
        if self.level is not None:
            import zstd

            data = zstd.compress(raw, self.level)
            zip_info = {"basename": f"{raw_name}.zstd", "bytes": len(data), "hashes": {}}
        name = zip_info["basename"] if zip_info else raw_name
        with open(os.path.join(self.out, name), "wb") as file:
            file.write(data)
        shard = {"samples": count, "raw_data": raw_info, "zip_data": zip_info}
        shard.update(self.config)
        self.shards.append(shard)

    def finish(self) -> None:
        """Write the last shard (if it holds samples) and ``index.json``."""
        if self.samples:
            self.flush_shard()
            self._start_shard()
        with open(os.path.join(self.out, INDEX_BASENAME), "w") as file:
            json.dump({"version": 2, "shards": self.shards}, file, sort_keys=True)

    def __enter__(self) -> MiniMDSWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.finish()
