"""File helpers: atomic writes of files and folders, so a half-written output never looks complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.object_store import is_remote

# What an earlier Hugging Face export holds: a folder with one of these files is
# replaced by a rerun; any other non-empty folder is refused (it may hold the user's files).
HF_FOLDER_MARKERS = ("config.json", "adapter_config.json")


def looks_like_local_path(name: str) -> bool:
    """True for names that can only be local paths, never Hugging Face Hub ids (an id is
    ``name`` or ``org/name``): absolute, ``.``/``~``-relative, deeper than one slash, or with a
    backslash."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def format_size(num_bytes: int) -> str:
    """``num_bytes`` in a readable SI unit: ``"512 B"``, ``"1.5 kB"``, ``"2.0 GB"`` (powers of
    1000, up to TB)."""
    size = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"


def check_output_folder(out: str, key: str) -> None:
    """Refuse a local output folder that cannot be made: one where a file stands (at ``out`` or
    at a parent of it) or under a folder this process cannot write to. The part from the first
    ``{placeholder}`` on (``{run_name}``) is left out; a remote URI is left to its store.
    Nothing is created.

    Raises:
        ConfigError: naming ``key`` (``save_folder``, ``--out_root``) and the folder.
    """
    if "://" in out:
        return
    fixed = Path(out.split("{", 1)[0] or ".").absolute()
    existing = next(p for p in (fixed, *fixed.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ConfigError(
            f"{key} '{out}' cannot be created ('{existing}' is a file); choose another folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} '{out}' is not writable; choose a folder you can write to")


def check_replaceable_output(target: str | Path, flag: str, markers: tuple[str, ...]) -> None:
    """Refuse an output folder that a command would replace but did not write.

    Args:
        target: the output folder the command will replace.
        flag: the option that named it, for the message (``--hf_output_path``).
        markers: files one of which a previous output of the command holds.

    Raises:
        ConfigError: if ``target`` is an object-store URI, a file, or a non-empty folder holding
            none of ``markers``.
    """
    if is_remote(str(target)):
        raise ConfigError(
            f"{flag}={str(target)!r}: writing to an object store is not supported by this "
            "command; give a local folder and upload it afterwards"
        )
    path = Path(target)
    if path.is_file():
        raise ConfigError(f"{flag}={str(target)!r} is a file; give the path of a folder to write")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not any((path / marker).exists() for marker in markers):
        raise ConfigError(
            f"{flag}={str(target)!r} is a non-empty folder that is not an earlier output (it has "
            f"no {' or '.join(markers)}) and would be replaced whole; give a new or empty folder"
        )


def _default_mode() -> int:
    """The permissions a new folder gets under the current umask (``mkdtemp`` gives 0700)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def _make_parents(target: Path) -> list[Path]:
    """Create ``target``'s missing parent folders; return them, deepest first."""
    missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    return missing


_STAGING_TRIES = 5  # concurrent failed writes that may remove a shared parent in between


def _staging_next_to(target: Path, make: Callable[[Path], Path]) -> tuple[list[Path], Path]:
    """Create ``target``'s missing parents, then the staging entry ``make(target.parent)``.

    Returns the parent folders this call created (deepest first) and the staging path. Writers
    in other threads share parents: one that fails removes the empty parents it created, which
    can happen between our ``mkdir`` and ``make``; that shows as ``FileNotFoundError`` and the
    parents are made again.
    """
    created: set[Path] = set()
    for _ in range(_STAGING_TRIES - 1):
        try:
            created.update(_make_parents(target))
            return _deepest_first(created), make(target.parent)
        except FileNotFoundError:
            continue
    created.update(_make_parents(target))  # the last try lets the error through
    return _deepest_first(created), make(target.parent)


def _deepest_first(folders: set[Path]) -> list[Path]:
    return sorted(folders, key=lambda folder: len(folder.parts), reverse=True)


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed write created, deepest first, while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another output landed there), or already gone
            return


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a staging folder that replaces ``target`` only when the block finishes without error.

    The staging folder sits next to ``target`` (same filesystem, so the final rename is atomic)
    and gets a new folder's usual permissions; on error it is removed, so are the parent folders
    this call created while they are empty, and ``target`` is left as it was. Staging folders a
    killed run left for the same ``target`` are removed first.

    Raises:
        NotADirectoryError: if ``target`` is a file (a folder never replaces one).
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"'{target}' is a file; an output folder cannot replace it")
    for stale in target.parent.glob(f".{target.name}.partial-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    created, staging = _staging_next_to(
        target, lambda parent: Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=parent))
    )
    staging.chmod(_default_mode())
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(created)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target`` that is renamed onto it when the block succeeds.

    Whatever the block writes there (text, a CSV, a saved figure) appears at ``target`` whole or
    not at all; on error the temporary file is removed, so are the parent folders this call
    created while they are empty, and ``target`` is left as it was. Temporary files a killed run
    left for the same ``target`` are removed first.
    """
    target = Path(target)
    for stale in target.parent.glob(f".{target.stem}.partial-*{target.suffix}"):
        stale.unlink(missing_ok=True)
    created, staging = _staging_next_to(target, lambda parent: _new_partial_file(parent, target))
    try:
        yield staging
    except BaseException:
        staging.unlink(missing_ok=True)
        _remove_if_empty(created)
        raise
    os.replace(staging, target)


def _new_partial_file(parent: Path, target: Path) -> Path:
    handle, name = tempfile.mkstemp(
        prefix=f".{target.stem}.partial-", suffix=target.suffix, dir=parent
    )
    os.close(handle)
    return Path(name)


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically (see :func:`atomic_file`)."""
    with atomic_file(target) as staging:
        staging.write_text(text, encoding="utf-8")
    return Path(target)


class JSONLineError(ValueError):
    """Why a JSON-lines row cannot be read.

    Attributes:
        reason: a few words naming the kind of problem (``"invalid JSON"``), for summaries.
        detail: what is wrong with the line, for the caller's message.
        fix: what to do, where the problem itself says (bad UTF-8); else the caller's fix.
    """

    def __init__(self, reason: str, detail: str, fix: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.fix = fix


def json_object_of_line(line: bytes | str) -> dict[str, Any]:
    """One JSON-lines row, which must be a UTF-8 JSON object.

    Raises:
        JSONLineError: for bad UTF-8, invalid JSON or a value that is not an object.
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JSONLineError(
                "invalid UTF-8",
                f"not valid UTF-8 (byte {err.start} of the line)",
                "re-encode the file as UTF-8",
            ) from err
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise JSONLineError("invalid JSON", f"not valid JSON ({err.msg})") from err
    if not isinstance(row, dict):
        raise JSONLineError(
            "not a JSON object", f"expected a JSON object, got {type(row).__name__}"
        )
    return cast(dict[str, Any], row)
