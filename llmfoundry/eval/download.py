"""Fetch LLM Foundry's public ICL benchmark files into a local ``local_data`` folder.

The standard task lists (``scripts/eval/yamls/tasks_v0.*.yaml``) read files such as
``eval/local_data/world_knowledge/arc_easy.jsonl``, which this project does not commit. The
packaged manifest (``llmfoundry/eval/data/manifest.tsv``) names each of them: its path in LLM
Foundry's repository, its size, its git blob id and the task lists (suites) that use it. This
module fetches a suite's files from LLM Foundry's repository at the manifest's pinned commit, from
another URL prefix, or from a local folder, verifies each against the manifest and moves it into
place atomically; files already present and valid are left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError, did_you_mean
from llmfoundry.utils.file_utils import atomic_file, format_size

MANIFEST_PATH = Path(__file__).resolve().parent / "data" / "manifest.tsv"
REPO_DATA_PREFIX = "scripts/eval/local_data/"
SUITES = ("v0.1", "v0.2", "v0.3")
SUITE_CHOICES = (*SUITES, "all")
DEFAULT_URL = "https://raw.githubusercontent.com/mosaicml/llm-foundry/{commit}/"
HTTP_TIMEOUT_S = 60.0
RETRIES = 3
RETRY_BACKOFF_S = 0.5
USER_AGENT = "llmfoundry-eval-download"
_BLOB_ID = re.compile(r"[0-9a-f]{40}")
_CHUNK = 1 << 20

Status = Literal["fetched", "present", "failed"]


@dataclass(frozen=True)
class ManifestEntry:
    """One benchmark file of the manifest."""

    path: str
    """Its path in LLM Foundry's repository (``scripts/eval/local_data/<category>/<name>.jsonl``)."""
    size: int | None
    """Its size in bytes, or None where the manifest does not know it."""
    blob_id: str
    """Its git blob id: sha1 of ``b'blob <size>\\0'`` followed by the content."""
    suites: frozenset[str]
    """The task lists (``v0.1``, ...) that read it."""

    @property
    def relative_path(self) -> str:
        """Its path under a ``local_data`` folder: ``<category>/<name>.jsonl``."""
        return self.path.removeprefix(REPO_DATA_PREFIX)


@dataclass(frozen=True)
class Manifest:
    """The benchmark files and the LLM Foundry commit they are pinned to."""

    commit: str | None
    entries: tuple[ManifestEntry, ...]

    def select(self, suite: str) -> list[ManifestEntry]:
        """The entries of ``suite`` (``all``: every entry), in manifest order."""
        if suite == "all":
            return list(self.entries)
        return [entry for entry in self.entries if suite in entry.suites]


def _parse_row(fields: list[str], where: str) -> ManifestEntry:
    """One manifest row as an entry; ``where`` (``file:line``) names it in errors."""
    if len(fields) != 4:
        raise DatasetError(
            f"{where}: expected 4 tab-separated fields (path, size, blob id, suites), "
            f"got {len(fields)}; fix the manifest"
        )
    path, size, blob_id, suites = fields
    parts = PurePosixPath(path).parts
    if not path.startswith(REPO_DATA_PREFIX) or ".." in parts or len(parts) < 5:
        raise DatasetError(f"{where}: path {path!r} is not under {REPO_DATA_PREFIX}<category>/")
    if size != "-" and not size.isdigit():
        raise DatasetError(f"{where}: size {size!r} is neither a byte count nor '-'")
    if not _BLOB_ID.fullmatch(blob_id):
        raise DatasetError(f"{where}: blob id {blob_id!r} is not 40 lowercase hex digits")
    names = frozenset() if suites == "-" else frozenset(suites.split(","))
    if unknown := sorted(names - set(SUITES)):
        raise DatasetError(
            f"{where}: unknown suite {unknown[0]!r}; suites are {', '.join(SUITES)} or '-'"
        )
    return ManifestEntry(path, None if size == "-" else int(size), blob_id, names)


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read a manifest TSV (default: the packaged one).

    Lines starting with ``#`` are comments; ``# commit: <sha>`` names the pinned commit. Every
    other non-empty line is ``path<TAB>size<TAB>blob id<TAB>suites``.

    Raises:
        MissingFileError: if the file does not exist.
        DatasetError: if a row is malformed or a path is listed twice.
    """
    path = Path(path) if path is not None else MANIFEST_PATH
    if not path.is_file():
        raise MissingFileError(f"manifest {path} does not exist; give an existing manifest TSV")
    commit: str | None = None
    entries: dict[str, ManifestEntry] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("#"):
            match = re.match(r"#\s*commit:\s*([0-9a-fA-F]{7,40})\s*$", line)
            commit = match.group(1) if match else commit
            continue
        if not line.strip():
            continue
        entry = _parse_row(line.split("\t"), f"{path}:{lineno}")
        if entry.path in entries:
            raise DatasetError(f"{path}:{lineno}: {entry.path} is listed twice; keep one row")
        entries[entry.path] = entry
    return Manifest(commit, tuple(entries.values()))


def git_blob_id(path: str | Path) -> str:
    """The git blob id of a file (what ``git hash-object`` prints), read in chunks."""
    path = Path(path)
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def mismatch(path: Path, entry: ManifestEntry) -> str | None:
    """Why ``path`` is not ``entry``'s file (size, then blob id), or None when it is."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"size mismatch: expected {entry.size} bytes, got {size}"
    blob_id = git_blob_id(path)
    if blob_id != entry.blob_id:
        return f"git blob id mismatch: expected {entry.blob_id}, got {blob_id}"
    return None


def default_dest(cwd: str | Path | None = None) -> Path:
    """``scripts/eval/local_data`` when ``cwd`` (default: the working directory) has
    ``scripts/eval`` (a checkout's root), else ``eval/local_data`` (run from ``scripts/``, where
    the task lists' ``dataset_uri: eval/local_data/...`` resolve)."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    if (base / "scripts" / "eval").is_dir():
        return base / "scripts" / "eval" / "local_data"
    return base / "eval" / "local_data"


def resolve_source(source: str | None, commit: str | None) -> str | Path:
    """An http(s) URL prefix (ending in ``/``) or an existing local folder to fetch from.

    ``None`` means LLM Foundry's raw file URLs at the manifest's ``commit``.

    Raises:
        ConfigError: if ``source`` is a URL of another scheme, or is None without a commit.
        MissingFileError: if ``source`` is neither a URL nor an existing folder.
    """
    if source is None:
        if commit is None:
            raise ConfigError("the manifest has no '# commit: <sha>' line; give --source")
        return DEFAULT_URL.format(commit=commit)
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        return source if source.endswith("/") else source + "/"
    if len(scheme) > 1:
        raise ConfigError(
            f"--source {source}: {scheme}:// is not supported; give an http(s) URL prefix or a "
            "local folder"
        )
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise MissingFileError(
            f"--source {source} is neither an http(s) URL nor an existing folder; give a URL "
            "prefix or a folder holding scripts/eval/local_data/... or <category>/<name>.jsonl"
        )
    return folder


class _FetchError(Exception):
    """One file could not be fetched or verified; ``str(err)`` is the one-line reason."""


def _retryable(err: Exception) -> bool:
    """Whether a failed HTTP request is worth repeating (server-side or network trouble)."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code in (408, 429)
    return isinstance(err, OSError | http.client.HTTPException)


def _download(url: str, staging: Path, timeout: float) -> None:
    """Write ``url``'s body to ``staging``, retrying network errors :data:`RETRIES` times."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    for attempt in range(RETRIES + 1):
        try:
            with (
                urllib.request.urlopen(request, timeout=timeout) as response,
                staging.open("wb") as out,
            ):
                shutil.copyfileobj(response, out, _CHUNK)
            return
        except (OSError, http.client.HTTPException) as err:
            if attempt < RETRIES and _retryable(err):
                time.sleep(RETRY_BACKOFF_S * 2**attempt)
                continue
            reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", err)
            tries = f" after {attempt + 1} attempts" if attempt else ""
            raise _FetchError(
                f"could not fetch {url}{tries}: {reason}; to fetch from elsewhere, give --source "
                "a mirror (an http(s) URL prefix or a local folder)"
            ) from err


def _copy_from_folder(folder: Path, entry: ManifestEntry, staging: Path) -> str:
    """Copy ``entry``'s file from a repository-layout or local_data-layout folder."""
    candidates = (folder / entry.path, folder / entry.relative_path)
    for candidate in candidates:
        if candidate.is_file():
            shutil.copyfile(candidate, staging)
            return str(candidate)
    raise _FetchError(f"not found in {folder} (looked for {candidates[0]} and {candidates[1]})")


@dataclass(frozen=True)
class FileResult:
    """What happened to one file."""

    entry: ManifestEntry
    status: Status
    nbytes: int = 0
    error: str = ""


def _sync_file(
    entry: ManifestEntry, dest: Path, source: str | Path, force: bool, timeout: float
) -> FileResult:
    """Make ``dest/<category>/<name>.jsonl`` hold ``entry``'s file (skipped when already valid)."""
    target = dest / entry.relative_path
    try:
        if not force and target.is_file() and mismatch(target, entry) is None:
            return FileResult(entry, "present", target.stat().st_size)
        with atomic_file(target) as staging:
            if isinstance(source, Path):
                origin = _copy_from_folder(source, entry, staging)
            else:
                origin = source + urllib.parse.quote(entry.path)
                _download(origin, staging, timeout)
            if problem := mismatch(staging, entry):
                raise _FetchError(f"{problem} (from {origin}); nothing written")
        return FileResult(entry, "fetched", target.stat().st_size)
    except (_FetchError, OSError) as err:
        return FileResult(entry, "failed", error=f"{entry.relative_path}: {err}")


@dataclass(frozen=True)
class DownloadReport:
    """The outcome of :func:`download_eval_data`: one result per file of the suite."""

    suite: str
    dest: Path
    results: tuple[FileResult, ...]

    def with_status(self, status: Status) -> list[FileResult]:
        """The results of one status, in manifest order."""
        return [result for result in self.results if result.status == status]

    @property
    def ok(self) -> bool:
        """Whether every file is now present and valid."""
        return not self.with_status("failed")

    def summary(self) -> str:
        """Two lines: counts and bytes fetched / already present / failed, and the destination."""
        fetched, present = self.with_status("fetched"), self.with_status("present")
        failed = self.with_status("failed")
        return (
            f"suite {self.suite}: fetched {len(fetched)} "
            f"({format_size(sum(r.nbytes for r in fetched))}), already present {len(present)} "
            f"({format_size(sum(r.nbytes for r in present))}), failed {len(failed)}, "
            f"of {len(self.results)} files\n"
            f"destination: {self.dest}"
        )


def download_eval_data(
    suite: str = "all",
    dest: str | Path | None = None,
    source: str | None = None,
    force: bool = False,
    jobs: int = 4,
    manifest_path: str | Path | None = None,
    progress: bool = True,
    timeout: float = HTTP_TIMEOUT_S,
) -> DownloadReport:
    """Fetch the benchmark files of ``suite`` into ``dest`` and verify them.

    Each file lands at ``dest/<category>/<name>.jsonl``. One already there with the manifest's
    size and git blob id is kept (unless ``force``); any other is fetched to a temporary name in
    its folder, verified and renamed into place, so a file that fails verification leaves nothing
    behind (the destination keeps what it had). Failures of single files do not stop the others;
    they are in the report.

    Args:
        suite: ``v0.1``, ``v0.2``, ``v0.3`` (the files of that task list) or ``all``.
        dest: the ``local_data`` folder (default: :func:`default_dest`).
        source: an http(s) URL prefix to which each manifest path is appended, or a local folder
            holding either a mirror of LLM Foundry's repository (``scripts/eval/local_data/...``)
            or a ``local_data`` folder itself (``<category>/<name>.jsonl``), looked up in that
            order; default: LLM Foundry's raw file URLs at the manifest's commit.
        force: fetch again even files already present and valid.
        jobs: files fetched at once (threads).
        manifest_path: the manifest TSV (default: the packaged one).
        progress: show a progress bar (files) on stderr.
        timeout: seconds an HTTP connection may stall before it is retried.

    Returns:
        The report: per-file results, with :meth:`DownloadReport.summary`.

    Raises:
        ConfigError: if ``suite`` or ``jobs`` is invalid, or ``dest`` is a file.
        MissingFileError: if the manifest or a ``source`` folder does not exist.
    """
    if suite not in SUITE_CHOICES:
        raise ConfigError(
            f"unknown suite {suite!r}{did_you_mean(suite, SUITE_CHOICES)}; "
            f"choose one of {', '.join(SUITE_CHOICES)}"
        )
    check_value(jobs, PositiveInt, "--jobs")
    manifest = load_manifest(manifest_path)
    origin = resolve_source(source, manifest.commit)
    dest = Path(dest).expanduser() if dest is not None else default_dest()
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"--dest {dest} is a file; give a folder (the local_data folder)")
    entries = manifest.select(suite)
    results: list[FileResult | None] = [None] * len(entries)
    folders = {dest, *((dest / entry.relative_path).parent for entry in entries)}
    new_folders = sorted((f for f in folders if not f.exists()), key=lambda f: -len(f.parts))
    try:  # one line for a destination nothing can be written to, not one per file
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"--dest {dest} cannot be created ({err.strerror}); give a folder you can write to"
        ) from err
    if not os.access(dest, os.W_OK):
        raise ConfigError(f"--dest {dest} is not writable; give a folder you can write to")

    from tqdm import tqdm

    with (
        ThreadPoolExecutor(max_workers=jobs) as pool,
        tqdm(
            total=len(entries),
            unit="file",
            desc=f"eval data {suite}",
            file=sys.stderr,
            disable=not progress,
        ) as bar,
    ):
        futures = {
            pool.submit(_sync_file, entry, dest, origin, force, timeout): index
            for index, entry in enumerate(entries)
        }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)
    for folder in new_folders:  # a failed run leaves no empty folders behind either
        with contextlib.suppress(OSError):
            folder.rmdir()
    return DownloadReport(suite, dest.resolve(), tuple(r for r in results if r is not None))
