"""The run configs in mcli/ for the MosaicML platform.

Each one loads as an mcli ``RunConfig`` without unknown keys, installs this repository with uv at
a pinned commit or tag, and names only scripts that exist. The training and evaluation configs
launch with ``composer <script> /mnt/config/parameters.yaml`` (mcli writes ``parameters:`` there);
their ``parameters:`` pass our config validation, and a training config's parameters match the
repository YAML it copies except for the keys that move data and checkpoints to an object store.
"""

from __future__ import annotations

import re
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcli import RunConfig

from llmfoundry.utils.config_utils import EvalConfig, TrainConfig, config_from_mapping
from tests import REPO

REPO_ROOT = REPO
MCLI_DIR = REPO_ROOT / "mcli"
PARAMETERS_FILE = "/mnt/config/parameters.yaml"
CLONE_PATH = "llm-foundry"

# Keys a training config may change from the repository YAML it copies: checkpoints saved to the
# object store, resumed from there after a retry.
CHECKPOINT_KEYS = frozenset(
    {"save_folder", "save_interval", "save_num_checkpoints_to_keep", "autoresume"}
)
REMOTE_DATA_KEYS = frozenset({"variables.data_local", "variables.data_remote"})

# Training configs: the repository YAML whose content ``parameters:`` carries, and the
# (dotted) keys allowed to differ from it.
TRAINING: dict[str, tuple[str, frozenset[str]]] = {
    "mpt-125m-pretrain.yaml": (
        "scripts/train/yamls/pretrain/mpt-125m.yaml",
        CHECKPOINT_KEYS | REMOTE_DATA_KEYS,
    ),
    "mpt-1b-pretrain.yaml": (
        "scripts/train/yamls/pretrain/mpt-1b.yaml",
        CHECKPOINT_KEYS | REMOTE_DATA_KEYS,
    ),
    "mpt-7b-instruct-finetune.yaml": (
        "scripts/train/yamls/finetune/mpt-7b_dolly_sft.yaml",
        CHECKPOINT_KEYS,
    ),
    "llama-lora-finetune.yaml": (
        "scripts/train/yamls/finetune/tinyllama-1.1b_lora_dolly_sft.yaml",
        CHECKPOINT_KEYS,
    ),
}
EVALUATION = {"eval-gauntlet.yaml": "scripts/eval/eval.py"}
# Configs that run one script with flags and take no ``parameters:``.
INFERENCE = {
    "convert-composer-to-hf.yaml": "scripts/inference/convert_composer_to_hf.py",
    "hf-generate.yaml": "scripts/inference/hf_generate.py",
    "serve-openai-endpoint.yaml": "scripts/inference/serve.py",
}
ALL_CONFIGS = sorted([*TRAINING, *EVALUATION, *INFERENCE])

# A pinned ref: a full commit SHA or a release tag (v1.2.3), so that a rerun gets the same code.
PINNED_REF = re.compile(r"[0-9a-f]{40}|v\d+\.\d+\.\d+")
BRANCH_NAMES = {"main", "master", "develop", "dev", "trunk", "head"}
SCRIPT_PATH = re.compile(r"scripts/[\w./-]+\.(?:py|yaml)")


def load(name: str) -> RunConfig:
    """The config as mcli reads it; any warning (an unknown key, a deprecated field) fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = RunConfig.from_file(MCLI_DIR / name)
    assert not caught, f"{name}: mcli warned: {[str(w.message) for w in caught]}"
    return config


def git_integration(config: RunConfig) -> dict[str, Any]:
    """The config's one git_repo integration."""
    repos = [i for i in config.integrations if i.get("integration_type") == "git_repo"]
    assert len(repos) == 1, f"{config.name}: expected one git_repo integration, got {repos}"
    return repos[0]


def command_lines(config: RunConfig) -> list[str]:
    """The command's lines, stripped, without blank ones."""
    return [line.strip() for line in config.command.splitlines() if line.strip()]


def differing_paths(left: Any, right: Any, prefix: str = "") -> set[str]:
    """Dotted keys where two nested mappings differ (a key missing on one side counts)."""
    if not (isinstance(left, dict) and isinstance(right, dict)):
        return set() if left == right else {prefix}
    paths: set[str] = set()
    for key in left.keys() | right.keys():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key in left and key in right:
            paths |= differing_paths(left[key], right[key], path)
        else:
            paths.add(path)
    return paths


def test_folder_holds_the_documented_configs() -> None:
    on_disk = sorted(path.name for path in MCLI_DIR.glob("*.yaml"))
    assert on_disk == ALL_CONFIGS
    readme = (MCLI_DIR / "README.md").read_text(encoding="utf-8")
    missing = [name for name in ALL_CONFIGS if f"mcli/{name}" not in readme]
    assert not missing, f"mcli/README.md does not describe {missing}"


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_loads_as_a_run_config(name: str) -> None:
    config = load(name)
    assert config.name == Path(name).stem
    assert config.image
    gpus = config.compute.get("gpus")
    assert isinstance(gpus, int) and gpus >= 1
    assert config.compute.get("cluster"), f"{name}: compute.cluster is not set"


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_installs_the_repository_with_uv_at_a_pinned_ref(name: str) -> None:
    config = load(name)
    repo = git_integration(config)
    ref = str(repo.get("git_commit", ""))
    assert "git_branch" not in repo, f"{name}: pin git_commit, not a branch"
    assert ref.lower() not in BRANCH_NAMES, f"{name}: git_commit {ref!r} is a branch name"
    assert PINNED_REF.fullmatch(ref), (
        f"{name}: git_commit {ref!r} is not a commit SHA or a vX.Y.Z tag"
    )
    assert repo.get("path") == CLONE_PATH
    lines = command_lines(config)
    steps = [f"cd {CLONE_PATH}", "pip install uv", "uv sync --frozen"]
    positions = [next(i for i, line in enumerate(lines) if line.startswith(s)) for s in steps]
    assert positions == sorted(positions), f"{name}: expected {steps} in this order"


def test_every_config_pins_the_same_repository_and_ref() -> None:
    pins = {
        name: (git_integration(config)["git_repo"], git_integration(config)["git_commit"])
        for name, config in ((name, load(name)) for name in ALL_CONFIGS)
    }
    assert len(set(pins.values())) == 1, f"the configs pin different code: {pins}"


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_command_is_valid_shell(name: str) -> None:
    result = subprocess.run(
        ["sh", "-n", "-c", load(name).command], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{name}: {result.stderr}"


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_named_scripts_exist(name: str) -> None:
    config = load(name)
    text = config.command + yaml.safe_dump(config.parameters)
    named = set(SCRIPT_PATH.findall(text))
    assert named, f"{name} names no script"
    missing = sorted(path for path in named if not (REPO_ROOT / path).is_file())
    assert not missing, f"{name} names scripts that do not exist: {missing}"


@pytest.mark.parametrize("name", sorted(INFERENCE))
def test_inference_config_runs_its_script(name: str) -> None:
    config = load(name)
    assert any(line.startswith(f"python {INFERENCE[name]}") for line in command_lines(config))
    assert not config.parameters, f"{name}: the script takes flags; parameters would be unused"


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_training_parameters_validate(name: str) -> None:
    config = load(name)
    assert command_lines(config)[-1] == f"composer scripts/train/train.py {PARAMETERS_FILE}"
    train, _ = config_from_mapping(config.parameters, TrainConfig)
    assert train.save_folder and train.save_folder.startswith("s3://")
    remote = train.train_loader["dataset"].get("remote")
    if "variables.data_remote" in TRAINING[name][1]:
        assert str(remote).startswith("s3://"), f"{name}: train data is not streamed from s3://"


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_training_parameters_follow_the_repository_yaml(name: str) -> None:
    source, allowed = TRAINING[name]
    repository = yaml.safe_load((REPO_ROOT / source).read_text(encoding="utf-8"))
    changed = differing_paths(load(name).parameters, repository)
    assert changed <= allowed, f"{name} differs from {source} at {sorted(changed - allowed)}"


def test_eval_parameters_validate() -> None:
    name, script = next(iter(EVALUATION.items()))
    config = load(name)
    assert command_lines(config)[-1] == f"composer {script} {PARAMETERS_FILE}"
    evaluation, _ = config_from_mapping(config.parameters, EvalConfig)
    # Relative to the repository root, the run's working directory.
    for path in (evaluation.icl_tasks, evaluation.eval_gauntlet):
        assert isinstance(path, str) and (REPO_ROOT / path).is_file()
