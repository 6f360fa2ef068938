"""Training under faults: SIGKILL during a checkpoint save, a damaged newest checkpoint, a
finished run started again, and SIGTERM between batches.

(SIGKILL between checkpoints, then autoresume, is tests/command_utils/test_kill_and_resume.py.)
Every run here is the tiny 6-batch run of the command tests with a checkpoint every 2 batches;
each resumed run must end with the weights of one uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from tests.command_utils.conftest import assert_same_weights, run_train_script, write_run_yaml

from .conftest import OVERRIDES, run_killed, train_here

# Registered through code_paths: sends its own process SIGTERM at the end of a chosen batch.
SIGTERM_SENDER = """
import os
import signal

from composer.core import Callback

from llmfoundry import registry


class SendSigterm(Callback):
    def __init__(self, at_batch: int) -> None:
        self.at_batch = at_batch

    def batch_end(self, state, logger) -> None:
        if int(state.timestamp.batch) == self.at_batch:
            os.kill(os.getpid(), signal.SIGTERM)


registry.callbacks.register("send_sigterm_for_test", func=SendSigterm)
"""


@pytest.fixture
def run_yaml(tmp_path: Path, mds_dir: Path, tokenizer_dir: Path) -> Path:
    """The tiny run's YAML in ``tmp_path``, saving to ``tmp_path / "ck"``."""
    return write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")


@pytest.fixture
def copied_run_yaml(run_yaml: Path, tmp_path: Path, clean_run: Path) -> Path:
    """``run_yaml``, its save folder starting as a copy of ``clean_run``'s."""
    shutil.copytree(clean_run, tmp_path / "ck", symlinks=True)
    return run_yaml


@pytest.mark.slow
def test_sigkill_during_checkpoint_save_then_autoresume(
    tmp_path: Path, run_yaml: Path, clean_run: Path
) -> None:
    # Each checkpoint calls torch.save twice (an all_gather_object pickles a tensor, then the
    # file is written): call 4 is the batch-4 file, cut in half on disk before the kill.
    run_killed("torch:save", 4, "half", "train/train.py", str(run_yaml), *OVERRIDES, cwd=tmp_path)
    ck = tmp_path / "ck"
    assert os.readlink(ck / "latest-rank0.pt") == "ep0-ba2-rank0.pt"
    half = (ck / "ep0-ba4-rank0.pt").stat().st_size
    assert 0 < half < (clean_run / "ep0-ba4-rank0.pt").stat().st_size

    end, losses = train_here(run_yaml)  # the same command again, not killed
    assert (end, len(losses)) == (6, 4)  # resumed from the whole batch-2 checkpoint
    assert_same_weights(clean_run / "latest-rank0.pt", ck / "latest-rank0.pt")


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, copied_run_yaml: Path, clean_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ck = tmp_path / "ck"
    newest = ck / "ep0-ba6-rank0.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) * 3 // 4])  # cut short, as by a node lost mid-write
    with caplog.at_level(logging.WARNING, logger="llmfoundry"):
        end, losses = train_here(copied_run_yaml)
    warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert warnings == [
        f"checkpoint {newest} is damaged (not a whole zip archive; renamed "
        f"ep0-ba6-rank0.pt.corrupt): resuming from {ck / 'ep0-ba4-rank0.pt'} instead"
    ]
    assert (end, len(losses)) == (6, 2)  # batches 5 and 6, from the batch-4 checkpoint
    assert (ck / "ep0-ba6-rank0.pt.corrupt").stat().st_size == len(data) * 3 // 4
    assert os.readlink(ck / "latest-rank0.pt") == "ep0-ba6-rank0.pt"
    assert_same_weights(clean_run / "latest-rank0.pt", ck / "latest-rank0.pt")


@pytest.mark.slow
def test_rerunning_a_finished_run_says_so_and_exits_0(
    tmp_path: Path, copied_run_yaml: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from llmfoundry.cli.commands.train import main

    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ck").iterdir()}
    with caplog.at_level(logging.WARNING, logger="llmfoundry"):
        assert main([str(copied_run_yaml), *OVERRIDES]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("llmfoundry")]
    checkpoint = (tmp_path / "ck" / "ep0-ba6-rank0.pt").resolve()
    assert lines == [
        f"run fault-test is already complete: checkpoint {checkpoint} reached max_duration 6ba "
        "(at 6ba); nothing to train. Raise max_duration to train further"
    ]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ck").iterdir()} == before


@pytest.mark.slow
def test_sigterm_between_batches_saves_stops_and_resumes(
    tmp_path: Path, run_yaml: Path, clean_run: Path
) -> None:
    sender = tmp_path / "sender.py"
    sender.write_text(SIGTERM_SENDER)
    stopped = run_train_script(
        run_yaml,
        [
            *OVERRIDES,
            "save_interval=4ba",  # batch 2 is saved only because of the SIGTERM
            f"code_paths=[{sender}]",
            "callbacks.send_sigterm_for_test={at_batch: 2}",
        ],
        tmp_path,
        timeout=300,
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    ck = tmp_path / "ck"
    assert f"SIGTERM: stopping after batch 2 and saving a checkpoint to {ck}" in stopped.stderr
    assert sorted(p.name for p in ck.glob("*.pt")) == ["ep0-ba2-rank0.pt", "latest-rank0.pt"]
    assert os.readlink(ck / "latest-rank0.pt") == "ep0-ba2-rank0.pt"

    end, losses = train_here(run_yaml)  # resumes from batch 2
    assert (end, len(losses)) == (6, 4)
    assert_same_weights(clean_run / "latest-rank0.pt", ck / "latest-rank0.pt")
