"""A run killed with SIGKILL after a checkpoint and restarted with autoresume reproduces the
uninterrupted run exactly: the same per-batch losses (so the same data order) and final weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import RESUMABLE, assert_same_weights, run_train_script, write_run_yaml

# Registered through code_paths: records each batch's loss, and can kill its own process.
RECORDER = """
import json
import os
import signal
from pathlib import Path

from composer.core import Callback

from llmfoundry import registry


class RecordLosses(Callback):
    def __init__(self, path: str, kill_at_batch: int = -1) -> None:
        self.path = Path(path)
        self.kill_at_batch = kill_at_batch

    def batch_end(self, state, logger) -> None:
        batch = int(state.timestamp.batch)
        loss = float(state.loss.detach()) if hasattr(state.loss, "detach") else float(state.loss)
        with self.path.open("a") as out:
            out.write(json.dumps({"batch": batch, "loss": loss.hex()}) + "\\n")
        if batch == self.kill_at_batch:
            os.kill(os.getpid(), signal.SIGKILL)


registry.callbacks.register("record_losses_for_test", func=RecordLosses)
"""


def losses(path: Path) -> dict[int, str]:
    """Batch -> loss (as float.hex, exact) of a recorder file; a resumed run overwrites none."""
    recorded: dict[int, str] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        recorded[row["batch"]] = row["loss"]
    return recorded


@pytest.mark.slow
def test_sigkill_then_autoresume_matches_the_uninterrupted_run(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    common = [f"code_paths=[{recorder}]", *RESUMABLE, "run_name=resume-test"]

    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    yaml_path = write_run_yaml(reference_dir, mds_dir, tokenizer_dir, reference_dir / "ck")
    result = run_train_script(
        yaml_path,
        [*common, f"callbacks.record_losses_for_test={{path: {reference_dir / 'losses.jsonl'}}}"],
        reference_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    yaml_path = write_run_yaml(resumed_dir, mds_dir, tokenizer_dir, resumed_dir / "ck")
    record = resumed_dir / "losses.jsonl"
    killed = run_train_script(
        yaml_path,
        [*common, f"callbacks.record_losses_for_test={{path: {record}, kill_at_batch: 5}}"],
        resumed_dir,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL: no cleanup ran
    assert (resumed_dir / "ck" / "ep0-ba4-rank0.pt").is_file()
    assert not (resumed_dir / "ck" / "ep0-ba6-rank0.pt").exists()
    before = losses(record)
    assert sorted(before) == [1, 2, 3, 4, 5]

    record.rename(resumed_dir / "losses-before-kill.jsonl")
    restarted = run_train_script(
        yaml_path,
        [*common, f"callbacks.record_losses_for_test={{path: {record}}}"],
        resumed_dir,
    )
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    after = losses(record)
    assert sorted(after) == [5, 6]  # resumed from the batch-4 checkpoint

    reference = losses(reference_dir / "losses.jsonl")
    assert {**before, **after} == reference  # bitwise: float.hex of every batch loss
    assert_same_weights(reference_dir / "ck/latest-rank0.pt", resumed_dir / "ck/latest-rank0.pt")
