"""Training from a YAML: loss falls, checkpoints land, the launcher works, bad keys fail in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmfoundry.command_utils.train import compute_batch_sizes
from llmfoundry.utils.config_utils import TrainConfig, load_config
from llmfoundry.utils.exceptions import ConfigError
from tests import REPO
from tests.command_utils.tiny_models import composer_launcher

from .conftest import TrainedRun, write_run_yaml

TRAIN_SCRIPT = REPO / "scripts/train/train.py"


def test_train_loss_falls_and_eval_runs(trained_run: TrainedRun) -> None:
    assert len(trained_run.losses) == 12
    first, last = sum(trained_run.losses[:3]) / 3, sum(trained_run.losses[-3:]) / 3
    assert last < first - 0.5, trained_run.losses
    # eval_interval=6ba over 12 batches: evaluated twice, and the model improved in between
    assert len(trained_run.eval_losses) == 2
    assert trained_run.eval_losses[1] < trained_run.eval_losses[0]


def test_checkpoints_are_saved_at_interval(trained_run: TrainedRun) -> None:
    folder = trained_run.checkpoint.parent
    assert (folder / "ep0-ba6-rank0.pt").is_file()
    assert trained_run.checkpoint.resolve().name == "ep0-ba12-rank0.pt"


def test_batch_sizes_split_over_processes(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    from composer.devices import DeviceCPU

    cfg, _ = load_config(
        write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck"), [], TrainConfig
    )
    sizes = compute_batch_sizes(cfg, world_size=2, device=DeviceCPU())
    assert (sizes.device_train_batch_size, sizes.device_train_microbatch_size) == (4, 4)
    assert sizes.device_eval_batch_size == 8
    auto_cfg, _ = load_config(
        write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck"),
        ["device_train_microbatch_size=auto"],
    )
    assert compute_batch_sizes(auto_cfg, 1, DeviceCPU()).device_train_microbatch_size == 8
    with pytest.raises(
        ConfigError,
        match="global_train_batch_size=8 must be divisible by the number of processes \\(3\\)",
    ):
        compute_batch_sizes(cfg, world_size=3, device=DeviceCPU())


def _launch_three_batches(nproc: int, tmp_path: Path, mds_dir: Path, tokenizer_dir: Path) -> Path:
    """Run ``composer -n <nproc> train.py`` for 3 batches; return the checkpoint folder."""
    save = tmp_path / "ckpt"
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, save)
    command = [composer_launcher(), "-n", str(nproc), str(TRAIN_SCRIPT), str(yaml_path)]
    result = subprocess.run(
        [*command, "max_duration=3ba", "eval_interval=3ba"],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return save


@pytest.mark.slow
def test_composer_launcher_trains_and_saves(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    save = _launch_three_batches(1, tmp_path, mds_dir, tokenizer_dir)
    assert (save / "ep0-ba3-rank0.pt").is_file()


@pytest.mark.slow
def test_misspelled_key_fails_in_one_line(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")
    result = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), str(yaml_path), "max_durations=5ba"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: unknown top-level key 'max_durations'; did you mean 'max_duration'?"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.d_modle=64",
            "model.d_modle is not a valid key for mpt_causal_lm; did you mean 'd_model'",
        ),
        ("train_loader.dataset.split=nosuch", "nosuch"),
        (
            "tokenizer.name=./no/such/tokenizer",
            "tokenizer folder './no/such/tokenizer' does not exist",
        ),
    ],
)
def test_bad_component_input_fails_with_a_named_error(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path, override: str, message: str
) -> None:
    from llmfoundry.command_utils.train import train_from_yaml
    from llmfoundry.utils.exceptions import UserError

    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")
    with pytest.raises(UserError, match=message):
        train_from_yaml(yaml_path, [override])


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_two_process_ddp_run_under_the_launcher(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    """``composer -n 2`` on CPU (gloo): both ranks train on their half of the batch and exit 0."""
    save = _launch_three_batches(2, tmp_path, mds_dir, tokenizer_dir)
    # Rank 0 writes the checkpoint of the replicated (DDP) state.
    assert (save / "ep0-ba3-rank0.pt").is_file()
