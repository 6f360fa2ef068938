"""Where MDS data comes from: the ``streams:`` of a loader section, and checks of an MDS folder
before Streaming reads it, each failing in one line by name.

Streaming reports a missing split, a corrupt ``index.json``, a missing shard or a shard cut
short with its own exceptions (``JSONDecodeError``, ``KeyError``, "path to remote dataset must be
provided", or an epoch that ends early); these checks name the file and what to do instead. They
look at local files only: with a ``remote``, what is not here yet is downloaded (and checked)
when it is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streaming import Stream

from llmfoundry.utils.config_components import check_call_kwargs
from llmfoundry.utils.exceptions import ConfigError, DatasetError

CONVERT_HINT = "write it with scripts/data_prep/convert_text_to_mds.py or convert_dataset_json.py"
BAD_SHARD_HINT = (
    "the file is truncated or corrupted: convert the dataset again (or copy it again), or delete "
    "the file from the local cache so that it is downloaded again from `remote`; "
    "`validate_hash: sha1` checks downloads when the index records hashes"
)
REDO_HINT = "convert the dataset again (or copy the whole folder again)"


def check_index_available(local: str | None, split: str | None, remote: str | None) -> None:
    """Fail early, by name, when local data has no usable MDS index.

    A local ``index.json`` must be a JSON object listing at least one shard; without a
    ``remote``, it must exist and every shard it lists must be in the folder.

    Args:
        local: the local folder.
        split: the split sub-folder, or None.
        remote: the remote; when set, missing local files are downloaded, so only the files
            already here are checked.

    Raises:
        DatasetError: naming the missing folder, split, index or shard, or the corrupt index,
            and how to fix it.
    """
    if local is None:
        return
    folder = Path(local)
    index = folder / (split or "") / "index.json"
    if index.is_file():
        shards = read_index(index)
        if not remote:
            check_shard_files(index.parent, shards, index)
        return
    if remote:
        return
    if not folder.is_dir():
        raise DatasetError(
            f"dataset folder '{local}' does not exist and no remote is set; {CONVERT_HINT}"
        )
    if split:
        found = sorted(p.parent.name for p in folder.glob("*/index.json"))
        raise DatasetError(
            f"split '{split}' not found in '{local}' (no {index}); "
            f"splits there: {', '.join(found) or 'none'}; {CONVERT_HINT}"
        )
    raise DatasetError(f"no MDS index at '{index}'; {CONVERT_HINT}")


def read_index(index: Path) -> list[dict[str, Any]]:
    """The shard entries of an MDS ``index.json``.

    Raises:
        DatasetError: if it is not valid JSON, not an MDS index, or lists no shard.
    """
    try:
        content = json.loads(index.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        what = "empty" if not index.stat().st_size else "not valid JSON"
        raise DatasetError(
            f"'{index}' is {what} (an interrupted conversion or copy?); {REDO_HINT}"
        ) from err
    shards = content.get("shards") if isinstance(content, dict) else None
    if not isinstance(shards, list) or not all(
        isinstance(shard, dict) and isinstance(shard.get("raw_data"), dict) for shard in shards
    ):
        raise DatasetError(
            f"'{index}' is not an MDS index (it needs a 'shards' list of shard entries); "
            f"{REDO_HINT}"
        )
    if not shards:
        raise DatasetError(f"'{index}' lists no shards: the dataset is empty; {REDO_HINT}")
    return shards


def check_shard_files(folder: Path, shards: Sequence[dict[str, Any]], index: Path) -> None:
    """Fail on the first shard listed in ``index`` that is in neither of its forms in ``folder``.

    Raises:
        DatasetError: naming the missing file.
    """
    for shard in shards:
        names = [
            info["basename"]
            for info in (shard.get("raw_data"), shard.get("zip_data"))
            if isinstance(info, dict) and isinstance(info.get("basename"), str)
        ]
        if names and not any((folder / name).is_file() for name in names):
            raise DatasetError(
                f"shard file {folder / names[-1]} listed in '{index}' is missing and no remote is "
                f"set to download it from; {REDO_HINT}"
            )


def check_local_shard_sizes(shards: Sequence[Any]) -> None:
    """Fail by name on a local shard file whose size differs from its index entry.

    Streaming downloads and decompresses to a temporary name and then renames, so a file of the
    wrong size was cut short (an interrupted copy or conversion) or overwritten.

    Args:
        shards: a ``StreamingDataset``'s shard readers (``dirname``, ``split``, ``file_pairs``).

    Raises:
        DatasetError: naming the file, both sizes and what to do.
    """
    for shard in shards:
        for raw_info, zip_info in shard.file_pairs:
            for info in (raw_info, zip_info):
                if info is None:
                    continue
                path = os.path.join(shard.dirname, shard.split, info.basename)
                try:
                    size = os.path.getsize(path)
                except OSError:
                    continue  # not here yet: downloaded (and checked) when needed
                if size != info.bytes:
                    raise DatasetError(
                        f"shard file {path} has {size} bytes but its index.json says "
                        f"{info.bytes}; {BAD_SHARD_HINT}"
                    )


def stream_remote_local_validate(remote: str | None, local: str | None, split: str | None) -> None:
    """LLM Foundry's name (and argument order) for :func:`check_index_available`."""
    check_index_available(local, split, remote)


def check_streams_section(streams: Any, section: str) -> None:
    """Check a loader's ``streams:`` mapping (``{name: {remote, local, split, proportion, ...}}``)
    without building it: each stream's keys and values against ``streaming.Stream``'s signature.

    Raises:
        ConfigError: naming the stream and its bad key or value.
    """
    if streams is None:
        return
    if not isinstance(streams, Mapping):
        raise ConfigError(
            f"{section} must be a mapping of stream name to Stream keyword arguments "
            "({name: {local: ..., proportion: ...}})"
        )
    for name, kwargs in streams.items():
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"{section}.{name} must be a mapping of Stream keyword arguments")
        check_call_kwargs(Stream, kwargs, f"{section}.{name}")


def build_streams(streams: Mapping[str, Mapping[str, Any]], section: str) -> list[Stream]:
    """Build the ``streams:`` mapping (``{name: {remote, local, split, proportion, ...}}``).

    Args:
        streams: each stream's keyword arguments for ``streaming.Stream``, by name.
        section: the key path of the mapping, for messages.

    Returns:
        The streams.

    Raises:
        ConfigError: naming a stream's unknown key or bad value.
    """
    check_streams_section(streams, section)
    return [Stream(**kwargs) for kwargs in streams.values()]
