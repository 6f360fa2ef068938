"""A local Hugging Face Hub cache with named revisions, for testing ``--revision`` offline.

The cache has the Hub client's layout (``models--org--name/refs/<ref>`` holding a commit hash,
``snapshots/<hash>/`` the files), and the client is put in offline mode, so ``revision=`` is
resolved from the cache and nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest


def add_revision(cache: Path, repo_id: str, ref: str, folder: Path) -> None:
    """Store ``folder``'s files as revision ``ref`` of ``repo_id`` in the cache."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{ref}".encode()).hexdigest()
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)


@pytest.fixture
def offline_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty hub cache that ``from_pretrained`` reads, with the Hub client offline."""
    cache = tmp_path / "hub_cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    yield cache
