"""Where ICL task rows come from: local JSONL files, object stores, or Hugging Face datasets.

``dataset_uri`` may be

* a local JSONL path. A relative path is looked up in the working directory first (as LLM
  Foundry does; its users run from ``scripts/``), then in the folder of the YAML that named it
  and each folder above that one, so ``eval/local_data/...`` in ``scripts/eval/yamls/*.yaml``
  works from the repository root too;
* ``s3://``, ``gs://`` or ``oci://`` URIs: downloaded once per node (local rank 0 fetches, the
  other local ranks wait) into a cache under the temp folder;
* ``hf://<dataset>``: loaded with ``datasets.load_dataset(<dataset>, **hf_loading_vars)``;
  ``hf_parsing_map`` (``{icl_key: [column, ...]}``) builds each ICL field by joining those
  columns' values with spaces.

A row's fields are checked by ``require`` and its kin, which name the file, row and field.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from llmfoundry.utils.file_utils import JSONLineError, json_object_of_line
from llmfoundry.utils.object_store import is_remote, user_errors

__all__ = [
    "DOWNLOAD_HINT",
    "ICLRow",
    "read_task_rows",
    "resolve_config_file",
    "resolve_relative",
    "split_by_category",
]

DOWNLOAD_HINT = "llmfoundry eval download-data (or python scripts/eval/download_eval_data.py)"
_REMOTE_SCHEMES = ("s3://", "gs://", "oci://")


@dataclass(frozen=True)
class ICLRow:
    """One task row: its fields, and where it came from (for error messages)."""

    fields: Mapping[str, Any]
    source: str
    line: int

    def where(self, field: str) -> str:
        """``file, row N, field 'x'`` for an error message."""
        return f"{self.source}, row {self.line}, field '{field}'"


def resolve_relative(path: str, anchors: Sequence[Path] = ()) -> Path | None:
    """An existing file for ``path``: as given (absolute or from the working directory), else
    relative to each anchor folder and every folder above it (nearest first); None if none."""
    candidate = Path(path).expanduser()
    if candidate.is_file() or candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for anchor in anchors:
        for folder in (anchor, *anchor.parents):
            if (folder / candidate).is_file():
                return folder / candidate
    return None


def resolve_config_file(
    value: Mapping[str, Any] | str, anchors: Sequence[Path]
) -> Mapping[str, Any] | str:
    """A path-valued config entry (``eval_gauntlet: eval/yamls/x.yaml``) found in the working
    directory or the YAML's folders; a section, or a path found nowhere, is returned as is."""
    if isinstance(value, str):
        found = resolve_relative(value, anchors)
        if found is not None:
            return str(found)
    return value


def _missing_file(dataset_uri: str, label: str) -> MissingFileError:
    if "local_data/" in dataset_uri:
        fix = f"fetch LLM Foundry's benchmark files with: {DOWNLOAD_HINT} --suite all"
    else:
        fix = "point dataset_uri at a JSONL file (relative paths: the working directory, then the YAML's folders)"
    return MissingFileError(
        f"icl task '{label}': dataset_uri '{dataset_uri}' does not exist; {fix}"
    )


def _jsonl_rows(path: Path, source: str) -> list[ICLRow]:
    rows = []
    fix = "each line must be one JSON object; fix or remove the line"
    with path.open("rb") as handle:  # binary: bad UTF-8 is reported with its line number
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                fields = json_object_of_line(line)
            except JSONLineError as problem:
                raise DatasetError(
                    f"{source}, row {number}: {problem.detail}; {problem.fix or fix}"
                ) from problem
            rows.append(ICLRow(fields, source, number))
    return rows


def _download_once_per_node(uri: str, label: str) -> Path:
    """Fetch an object-store file to a per-node cache: local rank 0 downloads it afresh, and
    every process waits at a barrier (a copy left by an earlier run is never read as is)."""
    from composer.utils import dist
    from streaming.base.storage import CloudDownloader

    digest = hashlib.sha1(uri.encode()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / "llmfoundry-icl" / f"{digest}-{Path(uri).name}"
    if dist.get_local_rank() == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        with user_errors(f"icl task '{label}' dataset_uri", uri, "download it"):
            CloudDownloader.get(uri).download(uri, str(partial), 300.0)
        partial.replace(target)
    dist.barrier()
    return target


def _hf_rows(
    dataset_uri: str,
    hf_loading_vars: Mapping[str, Any],
    hf_parsing_map: Mapping[str, Sequence[str]],
    label: str,
) -> list[ICLRow]:
    import datasets

    name = dataset_uri.removeprefix("hf://")
    try:
        loaded = datasets.load_dataset(name, **dict(hf_loading_vars))
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
        raise ConfigError(
            f"icl task '{label}': could not load {dataset_uri} with hf_loading_vars "
            f"{dict(hf_loading_vars)} ({type(err).__name__}: {str(err).splitlines()[0][:300]})"
        ) from err
    if not isinstance(loaded, datasets.Dataset):
        raise ConfigError(
            f"icl task '{label}': {dataset_uri} loaded as {type(loaded).__name__}; choose one "
            "split with hf_loading_vars: {split: <name>}"
        )
    rows = []
    for index, record in enumerate(loaded):
        fields = dict(record)
        if hf_parsing_map:
            missing = sorted({c for cols in hf_parsing_map.values() for c in cols} - set(fields))
            if missing:
                raise DatasetError(
                    f"{dataset_uri}, row {index + 1}: hf_parsing_map names column(s) {missing} "
                    f"that the dataset lacks (columns: {sorted(fields)})"
                )
            fields = {
                key: " ".join(str(fields[column]) for column in columns)
                for key, columns in hf_parsing_map.items()
            }
        rows.append(ICLRow(fields, dataset_uri, index + 1))
    return rows


def read_task_rows(
    dataset_uri: str,
    label: str,
    anchors: Sequence[Path] = (),
    hf_loading_vars: Mapping[str, Any] | None = None,
    hf_parsing_map: Mapping[str, Sequence[str]] | None = None,
) -> list[ICLRow]:
    """The rows of a task's ``dataset_uri`` (see the module docstring for the URI forms).

    Args:
        dataset_uri: the task's ``dataset_uri``.
        label: the task's label, for messages.
        anchors: folders that relative local paths may also be relative to (the YAML's).
        hf_loading_vars: keyword arguments of ``datasets.load_dataset`` (``hf://`` only).
        hf_parsing_map: ``{icl_key: [column, ...]}`` (``hf://`` only).

    Raises:
        MissingFileError: a local file that does not exist (naming the download command).
        ConfigError: a download or hub load that fails.
        DatasetError: a line that is not a JSON object, or no rows at all.
    """
    if dataset_uri.startswith("hf://"):
        rows = _hf_rows(dataset_uri, hf_loading_vars or {}, hf_parsing_map or {}, label)
    elif dataset_uri.startswith(_REMOTE_SCHEMES):
        rows = _jsonl_rows(_download_once_per_node(dataset_uri, label), dataset_uri)
    elif is_remote(dataset_uri) and not dataset_uri.startswith("file://"):
        raise ConfigError(
            f"icl task '{label}': dataset_uri '{dataset_uri}' uses an unsupported scheme; use a "
            "local path, s3://, gs://, oci:// or hf://"
        )
    else:
        path = resolve_relative(dataset_uri.removeprefix("file://"), anchors)
        if path is None:
            raise _missing_file(dataset_uri, label)
        rows = _jsonl_rows(path, dataset_uri)
    if not rows:
        raise DatasetError(
            f"icl task '{label}': {dataset_uri} has no rows; add one JSON object per line"
        )
    return rows


def split_by_category(rows: Iterable[ICLRow]) -> dict[str, list[ICLRow]]:
    """Rows grouped by their ``category`` field, categories sorted (as LLM Foundry orders them).

    Raises:
        DatasetError: on a row without a string ``category``.
    """
    groups: dict[str, list[ICLRow]] = {}
    for row in rows:
        category = row.fields.get("category")
        if not isinstance(category, str) or not category:
            raise DatasetError(
                f"{row.where('category')}: missing or not a string (the task has has_categories: true)"
            )
        groups.setdefault(category, []).append(row)
    return {name: groups[name] for name in sorted(groups)}


def require(
    row: ICLRow, fields: Mapping[str, Any], name: str, kind: type | tuple[type, ...]
) -> Any:
    """``fields[name]`` if present and of ``kind``, else a DatasetError naming file/row/field."""
    if name not in fields:
        raise DatasetError(
            f"{row.source}, row {row.line}: missing field '{name}'; add it to the row"
        )
    value = fields[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join(k.__name__ for k in kinds)
        raise DatasetError(
            f"{row.where(name)}: expected {expected}, got {type(value).__name__}; fix the row"
        )
    return value


def require_strings(row: ICLRow, fields: Mapping[str, Any], name: str) -> list[str]:
    """A non-empty list of strings under ``name``."""
    values = require(row, fields, name, list)
    if not values:
        raise DatasetError(f"{row.where(name)}: the list is empty; give at least one entry")
    if not all(isinstance(v, str) for v in values):
        raise DatasetError(f"{row.where(name)}: every entry must be a string; fix the row")
    return values


def require_gold(row: ICLRow, fields: Mapping[str, Any], num_options: int, options: str) -> int:
    """The in-range ``gold`` index among ``num_options`` (the field ``options``) of a row."""
    gold = require(row, fields, "gold", int)
    if not 0 <= gold < num_options:
        raise DatasetError(
            f"{row.where('gold')}: gold={gold} is out of range for {num_options} {options} "
            f"(0..{num_options - 1}); set it to the index of the right one"
        )
    return gold
