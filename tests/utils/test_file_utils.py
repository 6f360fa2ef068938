"""Output folders: an export never replaces a folder it did not write, appears whole with normal
permissions, and a killed run's staging folder is cleaned up by the rerun."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.file_utils import (
    HF_FOLDER_MARKERS,
    JSONLineError,
    atomic_directory,
    atomic_file,
    check_replaceable_output,
    format_size,
    json_object_of_line,
    looks_like_local_path,
)


def test_a_folder_of_the_users_files_is_refused_naming_the_flag(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(
        ConfigError, match=r"--hf_output_path=.*mine.* non-empty folder.*config\.json"
    ):
        check_replaceable_output(target, "--hf_output_path", HF_FOLDER_MARKERS)
    assert (target / "notes.txt").read_text() == "keep me"


def test_new_empty_and_earlier_export_folders_are_accepted(tmp_path: Path) -> None:
    check_replaceable_output(tmp_path / "new", "--out", HF_FOLDER_MARKERS)
    (tmp_path / "empty").mkdir()
    check_replaceable_output(tmp_path / "empty", "--out", HF_FOLDER_MARKERS)
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "adapter_config.json").write_text("{}")
    check_replaceable_output(tmp_path / "export", "--out", HF_FOLDER_MARKERS)


def test_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model").write_text("x")
    with pytest.raises(ConfigError, match="is a file; give the path of a folder"):
        check_replaceable_output(tmp_path / "model", "--output", HF_FOLDER_MARKERS)


def test_an_atomic_folder_never_replaces_a_file(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("rows")
    with (
        pytest.raises(NotADirectoryError, match="data.jsonl' is a file"),
        atomic_directory(tmp_path / "data.jsonl") as staging,
    ):
        (staging / "index.json").write_text("{}")
    assert (tmp_path / "data.jsonl").read_text() == "rows"
    assert [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]


@pytest.mark.parametrize("atomic", [atomic_directory, atomic_file])
def test_a_failed_write_leaves_no_folder_it_created(
    atomic: Callable[[Path], AbstractContextManager[Path]], tmp_path: Path
) -> None:
    # Before: a converter that failed on its first row left an empty --out_root behind.
    with pytest.raises(RuntimeError), atomic(tmp_path / "out" / "deep" / "train"):
        raise RuntimeError("a bad row")
    assert list(tmp_path.iterdir()) == []  # out/ and out/deep/ are gone again
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    with pytest.raises(RuntimeError), atomic(tmp_path / "kept" / "train"):
        raise RuntimeError("a bad row")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


@pytest.mark.parametrize(
    ("atomic", "maker"), [(atomic_directory, "mkdtemp"), (atomic_file, "mkstemp")]
)
def test_a_parent_removed_by_a_concurrent_failed_write_is_made_again(
    atomic: Callable[[Path], AbstractContextManager[Path]],
    maker: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: eval-data download threads share a category folder; one failing file removed the
    # folder it had created just before another thread made its staging file there (CI flake).
    real = getattr(tempfile, maker)
    removed: list[Path] = []

    def other_writer_cleans_up_first(*args: object, dir: str | Path, **kwargs: object) -> object:
        if not removed:
            Path(dir).rmdir()
            removed.append(Path(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, maker, other_writer_cleans_up_first)
    target = tmp_path / "world_knowledge" / "beta.jsonl"
    with atomic(target) as staging:
        if staging.is_dir():
            (staging / "rows.jsonl").write_text("rows")
        else:
            staging.write_text("rows")
    assert removed == [target.parent]
    assert target.exists()
    assert [p.name for p in target.parent.iterdir()] == ["beta.jsonl"]


def test_the_folder_appears_with_the_umasks_permissions_and_stale_staging_goes(
    tmp_path: Path,
) -> None:
    stale = tmp_path / ".out.partial-killed"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"\0")
    other = tmp_path / ".other.partial-x"  # another target's staging folder stays
    other.mkdir()
    old_mask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as staging:
            (staging / "config.json").write_text("{}")
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-x", "out"]


def test_the_export_refuses_the_users_folder_before_reading_the_checkpoint(tmp_path: Path) -> None:
    from llmfoundry.command_utils.convert_composer_to_hf import convert_composer_to_hf

    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="--hf_output_path"):
        convert_composer_to_hf(str(tmp_path / "no-such.pt"), str(tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("gpt2", False),
        ("EleutherAI/gpt-neox-20b", False),
        ("/abs/model", True),
        ("./model", True),
        ("../model", True),
        ("~/model", True),
        ("runs/a/hf", True),
        ("runs\\hf", True),
    ],
)
def test_hub_ids_and_local_paths_are_told_apart(name: str, local: bool) -> None:
    """One rule for every loader (models, tokenizers, datasets, inference): a Hub id is ``name``
    or ``org/name``; anything else can only be a local path."""
    assert looks_like_local_path(name) is local


@pytest.mark.parametrize(
    ("line", "reason", "detail", "fix"),
    [
        (
            b'{"text": "\xff"}\n',
            "invalid UTF-8",
            "not valid UTF-8 (byte 10 of the line)",
            "re-encode",
        ),
        ('{"text": "cut', "invalid JSON", "not valid JSON (Unterminated string", None),
        ("[1, 2]", "not a JSON object", "expected a JSON object, got list", None),
    ],
)
def test_a_bad_json_line_says_what_is_wrong(
    line: bytes | str, reason: str, detail: str, fix: str | None
) -> None:
    with pytest.raises(JSONLineError) as raised:
        json_object_of_line(line)
    assert raised.value.reason == reason
    assert raised.value.detail.startswith(detail)
    assert (raised.value.fix or "").startswith(fix or "")
    assert (raised.value.fix is None) == (fix is None)


def test_a_json_line_reads_as_its_object() -> None:
    assert json_object_of_line(b'{"a": [1, "\xc3\xa9"]}\n') == {"a": [1, "é"]}


@pytest.mark.parametrize(
    ("num_bytes", "shown"),
    [(0, "0 B"), (999, "999 B"), (1500, "1.5 kB"), (2_000_000, "2.0 MB"), (3 * 10**12, "3.0 TB")],
)
def test_sizes_are_shown_in_si_units(num_bytes: int, shown: str) -> None:
    assert format_size(num_bytes) == shown


def test_an_object_store_output_is_refused_rather_than_written_to_a_local_s3_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Path("s3://bucket/out") is the relative local folder s3:/bucket/out: refuse it in one line.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^--hf_output_path='s3://bucket/out': writing to an"):
        check_replaceable_output("s3://bucket/out", "--hf_output_path", HF_FOLDER_MARKERS)
    assert list(tmp_path.iterdir()) == []
