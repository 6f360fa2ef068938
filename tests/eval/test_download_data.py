"""``llmfoundry eval download-data``: fetch, verify and place benchmark files, without a network.

A small fake manifest (with computed git blob ids) and a mirror of its files in a temporary
folder stand in for LLM Foundry's repository: served from the folder itself and over HTTP by a
``http.server`` on 127.0.0.1. The real manifest is checked for shape and against the shipped
task lists.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from llmfoundry.cli.cli import app
from llmfoundry.eval import download
from llmfoundry.eval.download import (
    REPO_DATA_PREFIX,
    SUITES,
    DownloadReport,
    default_dest,
    download_eval_data,
    git_blob_id,
    load_manifest,
)
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from tests import REPO

SCRIPT = REPO / "scripts" / "eval" / "download_eval_data.py"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# relative path under local_data -> (suites column, whether the manifest knows the size)
FILES = {
    "world_knowledge/alpha.jsonl": ("v0.1,v0.2", True),
    "world_knowledge/beta.jsonl": ("v0.3", False),
    "safety/gamma.jsonl": ("v0.1", True),
    "programming/delta.jsonl": ("-", True),
}
SUITE_FILES = {
    "v0.1": {"world_knowledge/alpha.jsonl", "safety/gamma.jsonl"},
    "v0.2": {"world_knowledge/alpha.jsonl"},
    "v0.3": {"world_knowledge/beta.jsonl"},
    "all": set(FILES),
}


def blob_id(data: bytes) -> str:
    """The git blob id of ``data``, computed independently of the module under test."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def content(name: str) -> bytes:
    """A few JSON lines that differ per file."""
    rows = [{"context": f"{name} question {i}", "continuation": f" answer {i}"} for i in range(20)]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def files_under(folder: Path) -> set[str]:
    """Every file below ``folder`` as a POSIX path relative to it."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """A manifest of :data:`FILES` with their true sizes and blob ids."""
    lines = ["# a test manifest", f"# commit: {COMMIT}"]
    for name, (suites, known_size) in FILES.items():
        data = content(name)
        size = str(len(data)) if known_size else "-"
        lines.append(f"{REPO_DATA_PREFIX}{name}\t{size}\t{blob_id(data)}\t{suites}")
    path = tmp_path / "manifest.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A folder laid out like LLM Foundry's repository, holding every file of the manifest."""
    root = tmp_path / "mirror"
    for name in FILES:
        path = root / REPO_DATA_PREFIX / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content(name))
    return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder and counts requests, without logging each one."""

    requests: list[str]

    def do_GET(self) -> None:
        """Count the request, then serve it."""
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        """Print nothing."""


@pytest.fixture
def http_mirror(mirror: Path) -> Iterator[tuple[str, list[str]]]:
    """The mirror served over HTTP on 127.0.0.1: (URL prefix, paths requested so far)."""
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(mirror))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fetch(
    manifest: Path,
    source: str | Path,
    dest: Path,
    suite: str = "all",
    force: bool = False,
    jobs: int = 4,
) -> DownloadReport:
    """Run the download quietly."""
    return download_eval_data(
        suite=suite,
        dest=dest,
        source=str(source),
        force=force,
        jobs=jobs,
        manifest_path=manifest,
        progress=False,
    )


def statuses(report: DownloadReport) -> dict[str, str]:
    """Each file's status by its local_data path."""
    return {r.entry.relative_path: r.status for r in report.results}


def test_fetch_from_local_folder_mirror(manifest: Path, mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "local_data"
    report = fetch(manifest, mirror, dest)
    assert report.ok and set(statuses(report).values()) == {"fetched"}
    assert files_under(dest) == set(FILES)  # no temporary files left either
    for name in FILES:
        assert (dest / name).read_bytes() == content(name)
    assert f"fetched {len(FILES)} " in report.summary()
    assert f"destination: {dest.resolve()}" in report.summary()


def test_fetch_from_local_data_layout_folder(manifest: Path, mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "local_data"
    report = fetch(manifest, mirror / REPO_DATA_PREFIX, dest, suite="v0.1")
    assert report.ok and files_under(dest) == SUITE_FILES["v0.1"]


def test_fetch_over_http_then_rerun_does_nothing(
    manifest: Path, http_mirror: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, requests = http_mirror
    dest = tmp_path / "local_data"
    report = fetch(manifest, url.rstrip("/"), dest, jobs=3)
    assert report.ok and set(statuses(report).values()) == {"fetched"}
    assert sorted(requests) == sorted(f"/{REPO_DATA_PREFIX}{name}" for name in FILES)
    for name in FILES:
        assert (dest / name).read_bytes() == content(name)
    again = fetch(manifest, url, dest)
    assert set(statuses(again).values()) == {"present"} and len(requests) == len(FILES)
    assert f"already present {len(FILES)} " in again.summary()


def test_skip_when_valid_refetch_when_corrupted_or_forced(
    manifest: Path, mirror: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "local_data"
    fetch(manifest, mirror, dest)
    for name in FILES:
        os.utime(dest / name, ns=(1_000_000_000, 1_000_000_000))
    (dest / "safety/gamma.jsonl").write_bytes(b"garbage\n")  # wrong size
    beta = dest / "world_knowledge/beta.jsonl"  # size unknown to the manifest: blob id decides
    beta.write_bytes(beta.read_bytes().replace(b"question", b"questiom"))
    report = fetch(manifest, mirror, dest)
    assert statuses(report) == {
        "world_knowledge/alpha.jsonl": "present",
        "world_knowledge/beta.jsonl": "fetched",
        "safety/gamma.jsonl": "fetched",
        "programming/delta.jsonl": "present",
    }
    assert (dest / "world_knowledge/alpha.jsonl").stat().st_mtime_ns == 1_000_000_000
    for name in FILES:
        assert (dest / name).read_bytes() == content(name)
    forced = fetch(manifest, mirror, dest, force=True, suite="v0.2")
    assert statuses(forced) == {"world_knowledge/alpha.jsonl": "fetched"}
    assert (dest / "world_knowledge/alpha.jsonl").stat().st_mtime_ns != 1_000_000_000


def test_wrong_mirror_content_fails_and_leaves_nothing(
    manifest: Path, mirror: Path, tmp_path: Path
) -> None:
    alpha = mirror / REPO_DATA_PREFIX / "world_knowledge/alpha.jsonl"
    alpha.write_bytes(alpha.read_bytes() + b"extra\n")
    beta = mirror / REPO_DATA_PREFIX / "world_knowledge/beta.jsonl"
    beta.write_bytes(beta.read_bytes().replace(b"answer", b"answeR"))
    dest = tmp_path / "local_data"
    report = fetch(manifest, mirror, dest)
    assert not report.ok
    errors = {r.entry.relative_path: r.error for r in report.with_status("failed")}
    assert set(errors) == {"world_knowledge/alpha.jsonl", "world_knowledge/beta.jsonl"}
    size = len(content("world_knowledge/alpha.jsonl"))
    assert errors["world_knowledge/alpha.jsonl"].startswith("world_knowledge/alpha.jsonl: ")
    assert f"expected {size} bytes, got {size + 6}" in errors["world_knowledge/alpha.jsonl"]
    expected = blob_id(content("world_knowledge/beta.jsonl"))
    assert re.search(
        f"blob id mismatch: expected {expected}, got [0-9a-f]{{40}}",
        errors["world_knowledge/beta.jsonl"],
    )
    assert all("\n" not in error for error in errors.values())
    assert files_under(dest) == {"safety/gamma.jsonl", "programming/delta.jsonl"}
    assert "failed 2" in report.summary()
    only_bad = tmp_path / "only_bad"
    assert not fetch(manifest, mirror, only_bad, suite="v0.2").ok
    assert not only_bad.exists()  # not even an empty folder


@pytest.mark.parametrize("suite", [*SUITES, "all"])
def test_suite_selects_exactly_its_files(
    suite: str, manifest: Path, mirror: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "local_data"
    report = fetch(manifest, mirror, dest, suite=suite)
    assert set(statuses(report)) == SUITE_FILES[suite] == files_under(dest)


def test_http_errors_name_the_url_and_suggest_source(
    manifest: Path,
    http_mirror: tuple[str, list[str]],
    mirror: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, requests = http_mirror
    (mirror / REPO_DATA_PREFIX / "world_knowledge/alpha.jsonl").unlink()
    report = fetch(manifest, url, tmp_path / "a", suite="v0.2")
    (error,) = [r.error for r in report.with_status("failed")]
    assert f"{url}{REPO_DATA_PREFIX}world_knowledge/alpha.jsonl" in error and "404" in error
    assert "--source" in error and len(requests) == 1  # a 404 is not retried
    monkeypatch.setattr(download, "RETRY_BACKOFF_S", 0.0)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = fetch(manifest, f"http://127.0.0.1:{port}/x/", tmp_path / "b", suite="v0.3")
    (error,) = [r.error for r in report.with_status("failed")]
    assert f"http://127.0.0.1:{port}/x/{REPO_DATA_PREFIX}world_knowledge/beta.jsonl" in error
    assert f"after {download.RETRIES + 1} attempts" in error and "--source" in error


def test_bad_options_are_user_errors(manifest: Path, mirror: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'v0.3'"):
        fetch(manifest, mirror, tmp_path, suite="v03")
    with pytest.raises(ConfigError, match="--jobs"):
        fetch(manifest, mirror, tmp_path, jobs=0)
    with pytest.raises(MissingFileError, match="neither an http"):
        fetch(manifest, tmp_path / "nowhere", tmp_path)
    with pytest.raises(ConfigError, match="s3://"):
        fetch(manifest, "s3://bucket/prefix", tmp_path)
    with pytest.raises(MissingFileError, match="manifest"):
        fetch(tmp_path / "none.tsv", mirror, tmp_path)
    # One line for a destination nothing can be written to (before: one error per file).
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^--dest .*a-file/local_data cannot be created"):
        fetch(manifest, mirror, tmp_path / "a-file" / "local_data")
    broken = tmp_path / "broken.tsv"
    broken.write_text(f"{REPO_DATA_PREFIX}a/b.jsonl\t12\tnot-a-blob-id\tv0.1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"broken\.tsv:1: blob id"):
        load_manifest(broken)


def test_default_dest(tmp_path: Path) -> None:
    assert default_dest(tmp_path) == tmp_path / "eval" / "local_data"
    (tmp_path / "scripts" / "eval").mkdir(parents=True)
    assert default_dest(tmp_path) == tmp_path / "scripts" / "eval" / "local_data"


def test_git_blob_id_matches_git(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(content("x"))
    assert git_blob_id(path) == blob_id(content("x"))
    try:
        out = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        return
    assert out.stdout.strip() == git_blob_id(path)


def test_cli_command(manifest: Path, mirror: Path, tmp_path: Path) -> None:
    (tmp_path / "scripts" / "eval").mkdir(parents=True)  # the working dir: default --dest
    base = ["eval", "download-data", "--manifest", str(manifest), "--source", str(mirror)]
    runner = CliRunner()
    result = runner.invoke(app, [*base, "--suite", "v0.1", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    dest = (tmp_path / "scripts" / "eval" / "local_data").resolve()
    assert files_under(dest) == SUITE_FILES["v0.1"]
    assert "suite v0.1: fetched 2 " in result.stdout and f"destination: {dest}" in result.stdout
    result = runner.invoke(app, base)
    assert result.exit_code == 0 and "fetched 2 " in result.stdout
    assert "already present 2 " in result.stdout
    (mirror / REPO_DATA_PREFIX / "safety/gamma.jsonl").write_bytes(b"{}\n")
    result = runner.invoke(app, [*base, "--force", "--suite", "v0.1"])
    assert result.exit_code == 1 and "failed 1" in result.stdout
    assert "error: safety/gamma.jsonl: size mismatch" in result.stderr
    result = runner.invoke(app, [*base, "--suite", "v9"])
    assert result.exit_code == 2 and result.stderr.startswith("error: unknown suite 'v9'")


@pytest.mark.slow  # a fresh interpreter spends most of this test importing llmfoundry
def test_script_twin(manifest: Path, mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    args = ["--manifest", str(manifest), "--source", str(mirror), "--dest", str(dest)]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"suite all: fetched {len(FILES)} " in done.stdout and str(dest) in done.stdout
    assert files_under(dest) == set(FILES)


def test_real_manifest() -> None:
    manifest = load_manifest()
    assert manifest.commit is not None and re.fullmatch("[0-9a-f]{40}", manifest.commit)
    assert len(manifest.entries) == 70
    for entry in manifest.entries:
        assert entry.path.startswith("scripts/eval/local_data/")
        assert entry.path.endswith(".jsonl") and entry.relative_path.count("/") == 1
        assert re.fullmatch("[0-9a-f]{40}", entry.blob_id)
    for suite in SUITES:
        assert manifest.select(suite), suite


def _task_list_files(path: Path) -> set[str]:
    """The ``<category>/<name>.jsonl`` files that a task list's ``dataset_uri`` values name."""
    tasks = yaml.safe_load(path.read_text(encoding="utf-8"))["icl_tasks"]
    uris = {task["dataset_uri"] for task in tasks}
    return {uri.split("local_data/", 1)[1] for uri in uris if "local_data/" in uri}


@pytest.mark.parametrize("suite", SUITES)
def test_shipped_task_lists_match_manifest_suites(suite: str) -> None:
    path = REPO / "scripts" / "eval" / "yamls" / f"tasks_{suite}.yaml"
    if not path.is_file():
        pytest.skip(f"{path.name} is not shipped")
    expected = {entry.relative_path for entry in load_manifest().select(suite)}
    assert _task_list_files(path) == expected
