"""More faults: SIGKILL inside a sharded (FSDP) checkpoint save of a two-process run, and SIGTERM
to a converter while its first shard is on disk and its index is not.

The sharded run is ``composer -n 2 scripts/train/train.py`` (a single CPU process trains without
FSDP, so writes no sharded checkpoint). Its reference is the live Hugging Face export the
``hf_checkpointer`` callback writes at each checkpoint, before the checkpoint itself: the killed
run's batch-4 export holds the weights of an uninterrupted run at batch 4.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.command_utils.conftest import write_run_yaml
from tests.command_utils.tiny_models import composer_launcher

from .conftest import KILLER, REPO, folder_bytes
from .test_converter_kills import assert_nothing_looks_done, write_rows

# 4 batches over 2 processes, a sharded checkpoint and a live export every 2 batches.
SHARDED_RUN = [
    "max_duration=4ba",
    "save_interval=2ba",
    "eval_loader=null",
    "precision=fp32",
    "autoresume=true",
    "run_name=sharded-fault",
    "fsdp_config={sharding_strategy: FULL_SHARD, state_dict_type: sharded}",
]

# Runs a script with Streaming's shard flush patched to wait after its first call: the shard
# is on disk, index.json is not (the state the SIGTERM must not leave looking finished).
PAUSE_AFTER_FIRST_SHARD = """
import runpy
import sys
import time

from llmfoundry.data.mds_writer import MiniMDSWriter

flush = MiniMDSWriter.flush_shard
calls = []


def flush_then_wait(self, *args, **kwargs):
    flush(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == 1:
        time.sleep(120)


MiniMDSWriter.flush_shard = flush_then_wait
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def launch_two(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``composer -n 2 ARGS`` (two processes on this machine)."""
    return subprocess.run(
        [composer_launcher(), "-n", "2", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)},
    )


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_sigkill_inside_a_sharded_checkpoint_save_then_autoresume(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")
    train = str(REPO / "scripts/train/train.py")

    def export_to(folder: Path) -> str:
        return f"callbacks.hf_checkpointer={{save_folder: {folder}, save_interval: 2ba}}"

    # Rank 0 (the coordinator, the only caller of finish) dies in the batch-4 save: both shard
    # files are written, the .metadata that makes the folder a checkpoint is not.
    finish = "torch.distributed.checkpoint.filesystem:FileSystemWriter.finish"
    killed = launch_two(
        str(KILLER),
        finish,
        "2",
        "before",
        train,
        str(yaml_path),
        *SHARDED_RUN,
        export_to(tmp_path / "killed"),
        cwd=tmp_path,
    )
    output = killed.stdout + killed.stderr
    assert killed.returncode != 0 and "Global rank 0 (PID" in output, output[-4000:]
    assert "exited with code -9" in output, output[-4000:]
    ck = tmp_path / "ck"
    assert os.readlink(ck / "latest-rank0.pt") == "ep0-ba2"
    assert sorted(p.name for p in (ck / "ep0-ba4").iterdir()) == ["__0_0.distcp", "__1_0.distcp"]
    uninterrupted = load_file(tmp_path / "killed" / "huggingface" / "ba4" / "model.safetensors")

    resumed = launch_two(
        train, str(yaml_path), *SHARDED_RUN, export_to(tmp_path / "resumed"), cwd=tmp_path
    )
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert os.readlink(ck / "latest-rank0.pt") == "ep0-ba4"
    assert ".metadata" in {p.name for p in (ck / "ep0-ba4").iterdir()}
    # Resumed from the batch-2 checkpoint: only batch 4 was exported, not batch 2 again.
    assert sorted(p.name for p in (tmp_path / "resumed" / "huggingface").iterdir()) == ["ba4"]
    got = load_file(tmp_path / "resumed" / "huggingface" / "ba4" / "model.safetensors")
    assert got.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        assert (got[name] == value).all(), name


@pytest.mark.slow
def test_sigterm_to_convert_dataset_json_after_its_first_shard_then_rerun(
    tmp_path: Path, corpus_texts: list[str], tokenizer_dir: Path
) -> None:
    from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json

    rows = write_rows(tmp_path / "rows.jsonl", corpus_texts * 2)  # about 300 KB
    pauser = tmp_path / "pause_after_first_shard.py"
    pauser.write_text(PAUSE_AFTER_FIRST_SHARD)
    out = tmp_path / "out" / "train"
    options = ["--concat_tokens", "64", "--tokenizer", str(tokenizer_dir), "--num_workers", "0"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        converter = subprocess.Popen(
            [
                sys.executable,
                str(pauser),
                str(REPO / "scripts/data_prep/convert_dataset_json.py"),
                "--path",
                str(rows),
                "--out_root",
                str(out),
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            deadline = time.monotonic() + 120
            while not list(out.parent.glob(".train.partial-*/shard.00000.mds")):
                assert converter.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no shard was written in 120 s"
                time.sleep(0.05)
            converter.send_signal(signal.SIGTERM)
            converter.wait(timeout=60)
        finally:
            if converter.poll() is None:  # a failed check above: leave no process behind
                converter.kill()
                converter.wait()
    # No handler takes SIGTERM in a converter: the default action ends it (-15 here, 143 in
    # a shell), with its hidden staging folder left for the next run to remove.
    assert converter.returncode == -signal.SIGTERM, log.read_text()[-3000:]
    assert not out.exists()
    assert_nothing_looks_done(tmp_path / "out")
    (staging,) = out.parent.glob(".train.partial-*")
    assert sorted(p.name for p in staging.iterdir()) == ["shard.00000.mds"]

    clean = tmp_path / "clean"
    for folder in (out, clean):  # the same command again, not stopped; and a clean run
        convert_dataset_json(
            str(rows), str(folder), concat_tokens=64, tokenizer=str(tokenizer_dir), num_workers=0
        )
    assert sorted(p.name for p in out.parent.iterdir()) == ["train"]  # the staging is gone
    assert folder_bytes(out) == folder_bytes(clean)
    assert sorted(folder_bytes(out)) == ["index.json", "shard.00000.mds"]
