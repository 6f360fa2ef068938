"""Two launcher processes on loopback (``--world_size 2 --node_rank 0/1``) form one 2-node job.

The "nodes" share this machine's /dev/shm, where Streaming's datasets keep their shared memory
under names that assume one node per machine (both nodes' local leaders would create the same
names), so this job reads a finetuning dataset from a JSON-lines file instead of MDS.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO

from .conftest import write_run_yaml

TRAIN_SCRIPT = REPO / "scripts/train/train.py"

# Registered through code_paths: each rank writes where it sits in the job at fit start.
WHERE_AM_I = """
import json
from pathlib import Path

from composer.core import Callback
from composer.utils import dist

from llmfoundry import registry


class WhereAmI(Callback):
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def fit_start(self, state, logger) -> None:
        info = {
            "world_size": dist.get_world_size(),
            "node_rank": dist.get_node_rank(),
            "local_world_size": dist.get_local_world_size(),
            "device_batch": state.device_train_microbatch_size,
        }
        (self.folder / f"rank{dist.get_global_rank()}.json").write_text(json.dumps(info))


registry.callbacks.register("where_am_i_for_test", func=WhereAmI)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_two_launchers_on_loopback_form_a_two_node_job(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path, corpus_texts: list[str]
) -> None:
    composer = shutil.which(
        "composer", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    assert composer is not None
    helper = tmp_path / "where_am_i.py"
    helper.write_text(WHERE_AM_I)
    save = tmp_path / "ck"
    rows = tmp_path / "rows.jsonl"
    lines = [line for text in corpus_texts for line in text.splitlines() if line.strip()]
    rows.write_text(
        "".join(
            json.dumps({"prompt": a, "response": b}) + "\n"
            for a, b in zip(lines[0:64:2], lines[1:64:2], strict=True)
        )
    )
    port = free_port()
    processes = []
    for node in (0, 1):
        node_dir = tmp_path / f"node{node}"
        node_dir.mkdir()
        yaml_path = write_run_yaml(node_dir, mds_dir, tokenizer_dir, save)
        text = yaml_path.read_text()
        start, end = text.index("train_loader:"), text.index("eval_loader:")
        loader = (
            "train_loader:\n  name: finetuning\n  drop_last: true\n  num_workers: 0\n"
            "  dataset:\n    hf_name: json\n    split: train\n    max_seq_len: 64\n"
            f"    hf_kwargs: {{data_files: {rows}, cache_dir: {node_dir / 'hf'}}}\n"
        )
        yaml_path.write_text(text[:start] + loader + text[end:])
        command = [
            composer,
            "--world_size", "2", "--node_rank", str(node), "-n", "1",
            "--master_addr", "127.0.0.1", "--master_port", str(port),
            str(TRAIN_SCRIPT), str(yaml_path),
            f"code_paths=[{helper}]",
            f"callbacks.where_am_i_for_test={{folder: {tmp_path}}}",
            "max_duration=2ba", "eval_loader=null",
        ]  # fmt: skip
        processes.append(
            subprocess.Popen(
                command, cwd=node_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [process.communicate(timeout=400)[0] for process in processes]
    for node, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"node {node}:\n{output[-3000:]}"
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["node_rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["local_world_size"] == 1 for r in ranks)
    # global_train_batch_size 8 over 2 processes: 4 each.
    assert all(r["device_batch"] == 4 for r in ranks)
    assert (save / "ep0-ba2-rank0.pt").is_file()
