"""Local rank 0 prepares an HF finetuning dataset first; the other ranks read its cache.

Two real processes (gloo on CPU) run ``hf_prep_rank.py``; the single-process path is checked in
process.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from composer.utils import dist
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning import build_finetuning_dataloader
from tests import REPO

RANK_SCRIPT = Path(__file__).with_name("hf_prep_rank.py")
REPO_ROOT = REPO
ROWS = [{"prompt": f"def f{i}(x):", "response": f" return x + {i}"} for i in range(12)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _signal_files() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("llmfoundry-finetuning-prep-*")}


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_two_ranks_get_identical_examples_and_rank_zero_failure_reaches_the_other(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    data_file = tmp_path / "train.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    signals_before = _signal_files()
    port = _free_port()
    processes = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "NODE_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "HF_HOME": str(tmp_path / "hf_home"),
            "HF_DATASETS_OFFLINE": "1",
            # The rank script imports its preprocessing functions by module name.
            "PYTHONPATH": os.pathsep.join([str(RANK_SCRIPT.parent), str(REPO_ROOT)]),
        }
        command = [
            sys.executable,
            str(RANK_SCRIPT),
            str(tokenizer_dir),
            str(data_file),
            str(tmp_path / "hf_cache"),
            str(out),
        ]
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    for process in processes:
        try:
            output, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail("a rank hung (local rank 0's preparation or failure never reached it)")
        assert process.returncode == 0, output.decode()[-3000:]
    rank0 = json.loads((out / "rank0.json").read_text())
    rank1 = json.loads((out / "rank1.json").read_text())

    # Both ranks hold the same tokenized examples.
    assert len(rank0["turns"]) == len(ROWS)
    assert rank0["turns"] == rank1["turns"]
    assert rank0["lengths"] == rank1["lengths"]
    # Rank 0 did the preprocessing; rank 1 read the cache rank 0 had filled.
    assert rank0["calls"] == len(ROWS)
    assert rank1["calls"] == 0

    # A failure on local rank 0 is raised on rank 1 too, by name, instead of a hang.
    assert rank0["error"].startswith("DatasetError: ")
    assert "rank zero cannot read this row" in rank0["error"]
    assert re.match(
        r"DatasetError: local rank 0 failed to prepare '\S*train\.jsonl' \(DatasetError: ",
        rank1["error"],
    )
    assert "rank zero cannot read this row" in rank1["error"]
    # Rank 0 cleaned up its signal files.
    assert _signal_files() == signals_before


def test_one_process_prepares_without_collective_calls(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single process (dist off, or world size 1) never waits, signals or broadcasts."""

    def no_collectives(*args: object, **kwargs: object) -> None:
        raise AssertionError("a single process must not make collective calls")

    monkeypatch.setattr(dist, "broadcast_object_list", no_collectives)
    monkeypatch.setattr(dist, "barrier", no_collectives)
    data_file = tmp_path / "train.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    dataset = {
        "hf_name": "json",
        "hf_kwargs": {"data_files": {"train": str(data_file)}, "cache_dir": str(tmp_path / "hf")},
        "split": "train",
        "max_seq_len": 32,
        "shuffle": False,
    }
    signals_before = _signal_files()
    for initialized in (False, True):  # True: dist initialized with world size 1
        monkeypatch.setattr(dist, "is_initialized", lambda initialized=initialized: initialized)
        batches = list(build_finetuning_dataloader(tokenizer, 4, dataset).dataloader)
        assert len(batches) == 3
    assert _signal_files() == signals_before
