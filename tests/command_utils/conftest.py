"""Fixtures for the command tests: tiny MDS data, a tiny run YAML and one trained checkpoint."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from streaming import MDSWriter
from transformers import PreTrainedTokenizerBase

from tests import REPO
from tests.fixtures import mpt_yaml

if TYPE_CHECKING:
    from composer import Trainer
    from composer.loggers import InMemoryLogger

    from llmfoundry.utils.config_utils import TrainConfig

SEQ_LEN = 64
TRAIN_SCRIPT = REPO / "scripts/train/train.py"

RUN_YAML = """
variables:
  data_local: {data}
  tokenizer_name: {tokenizer}
  max_seq_len: {seq}
  global_seed: 7
max_seq_len: ${{variables.max_seq_len}}
run_name: tiny-test
model:
{model}tokenizer:
  name: ${{variables.tokenizer_name}}
  kwargs:
    model_max_length: ${{variables.max_seq_len}}
train_loader:
  name: text
  dataset:
    local: ${{variables.data_local}}
    split: train
    shuffle: true
    shuffle_seed: ${{variables.global_seed}}
    max_seq_len: ${{variables.max_seq_len}}
  drop_last: true
  num_workers: 0
eval_loader:
  name: text
  dataset:
    local: ${{variables.data_local}}
    split: val
    max_seq_len: ${{variables.max_seq_len}}
  drop_last: false
  num_workers: 0
optimizer:
  name: decoupled_adamw
  lr: 3.0e-3
  betas: [0.9, 0.95]
  weight_decay: 0.0
scheduler:
  name: constant_with_warmup
  t_warmup: 0ba
max_duration: 12ba
eval_interval: 6ba
eval_subset_num_batches: 2
global_train_batch_size: 8
device_train_microbatch_size: 4
device_eval_batch_size: 8
precision: amp_bf16
seed: ${{variables.global_seed}}
log_to_console: false
python_log_level: null
callbacks:
  lr_monitor: {{}}
  speed_monitor:
    window_size: 2
save_folder: {save}
save_interval: 6ba
"""


def write_token_mds(folder: Path, token_ids: list[int], seq_len: int) -> int:
    """Write ``token_ids`` as consecutive ``seq_len`` samples in an MDS ``tokens`` column."""
    n_samples = len(token_ids) // seq_len
    with MDSWriter(out=str(folder), columns={"tokens": "ndarray:int32"}) as writer:
        for i in range(n_samples):
            writer.write(
                {"tokens": np.asarray(token_ids[i * seq_len : (i + 1) * seq_len], dtype=np.int32)}
            )
    return n_samples


@pytest.fixture(scope="session")
def mds_dir(
    tmp_path_factory: pytest.TempPathFactory,
    corpus_texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
) -> Path:
    """``train`` and ``val`` splits of 64-token samples from the fixture corpus."""
    root = tmp_path_factory.mktemp("mds")
    ids: list[int] = []
    for text in corpus_texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    cut = int(len(ids) * 0.9)
    write_token_mds(root / "train", ids[:cut], SEQ_LEN)
    write_token_mds(root / "val", ids[cut:], SEQ_LEN)
    return root


def write_run_yaml(folder: Path, mds: Path, tokenizer_dir: Path, save: Path) -> Path:
    """A complete LLM Foundry-style run YAML for the tiny model."""
    path = folder / "tiny.yaml"
    model = mpt_yaml(2, max_seq_len="${variables.max_seq_len}")
    path.write_text(
        RUN_YAML.format(data=mds, tokenizer=tokenizer_dir, seq=SEQ_LEN, save=save, model=model)
    )
    return path


# The tiny run made resumable: 6 batches, a checkpoint every 2, no eval, fp32, autoresume.
RESUMABLE = [
    "max_duration=6ba",
    "save_interval=2ba",
    "eval_interval=100ba",
    "eval_loader=null",
    "precision=fp32",
    "autoresume=true",
]


def run_train_script(
    yaml_path: Path, overrides: Sequence[str], cwd: Path, timeout: int = 400
) -> subprocess.CompletedProcess[str]:
    """``python scripts/train/train.py YAML OVERRIDES`` in ``cwd`` (PYTHONHASHSEED 0), its output
    captured; the caller checks the return code."""
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), str(yaml_path), *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def checkpoint_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model weights of a Composer checkpoint file."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return state["state"]["model"]


def assert_same_weights(expected: Path, got: Path) -> None:
    """The two checkpoints hold bitwise the same model weights."""
    want, have = checkpoint_weights(expected), checkpoint_weights(got)
    assert want.keys() == have.keys()
    for name in want:
        assert torch.equal(want[name], have[name]), name


def train_in_memory(
    cfg: TrainConfig, resolved: dict[str, Any], batches: int | None = None
) -> tuple[Trainer, InMemoryLogger, list[float]]:
    """Run ``train`` in this process with an in-memory logger and close the trainer; the trainer,
    the logger and the training losses. With ``batches``, check that the run stopped after that
    many batches with one finite loss each."""
    from composer.loggers import InMemoryLogger

    from llmfoundry.command_utils.train import train

    memory = InMemoryLogger()
    trainer = train(cfg, resolved, extra_loggers=[memory])
    trainer.close()
    losses = [float(v) for _, v in memory.data["loss/train/total"]]
    if batches is not None:
        assert trainer.state.timestamp.batch.value == batches
        assert len(losses) == batches and all(math.isfinite(loss) for loss in losses)
    return trainer, memory, losses


@dataclass
class TrainedRun:
    """A finished tiny training run."""

    yaml: Path
    checkpoint: Path
    losses: list[float]
    eval_losses: list[float]


@pytest.fixture(scope="session")
def trained_run(
    tmp_path_factory: pytest.TempPathFactory, mds_dir: Path, tokenizer_dir: Path
) -> TrainedRun:
    """Train the tiny model for 12 batches in-process and keep its losses and final checkpoint."""
    from llmfoundry.utils.config_utils import TrainConfig, load_config

    folder = tmp_path_factory.mktemp("run")
    yaml_path = write_run_yaml(folder, mds_dir, tokenizer_dir, folder / "checkpoints")
    cfg, resolved = load_config(yaml_path, [], TrainConfig)
    _, memory, losses = train_in_memory(cfg, resolved)
    eval_losses = [float(v) for _, v in memory.data["metrics/eval/LanguageCrossEntropy"]]
    return TrainedRun(yaml_path, folder / "checkpoints" / "latest-rank0.pt", losses, eval_losses)
