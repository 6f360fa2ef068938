"""Every YAML under scripts/train/yamls/ loads, builds and (the pretraining smoke ones) trains on CPU.

The YAMLs are found by glob, so a new one is covered as soon as it is added. Only data and
tokenizer paths are swapped for local fixtures (and hub datasets for a local JSON lines file):
everything else (bf16, flash attention, the fused loss, FSDP, meta init, loader worker options)
is what a user runs.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from llmfoundry.command_utils.parallelism import check_fsdp_config
from llmfoundry.command_utils.train import compute_batch_sizes
from llmfoundry.models.hf.composer_mpt import LOSS_FNS, ComposerMPTCausalLM, build_mpt_config
from llmfoundry.models.hf.hf_causal_lm import ComposerHFCausalLM, build_lora_config
from llmfoundry.models.hf.hf_t5 import ComposerHFT5
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.utils.builders import (
    build_algorithms,
    build_callbacks,
    build_dataloader_from_section,
    build_optimizer_from_section,
    build_scheduler_from_section,
    build_tokenizer_from_section,
)
from llmfoundry.utils.config_components import check_call_keys
from llmfoundry.utils.config_utils import TrainConfig, load_config
from tests import REPO
from tests.fixtures import tiny_llama

from .conftest import TrainedRun, train_in_memory

YAML_DIR = REPO / "scripts/train/yamls"
YAMLS = sorted(YAML_DIR.rglob("*.yaml"))
IDS = [str(p.relative_to(YAML_DIR)) for p in YAMLS]
README = YAML_DIR / "README.md"

# The variables through which YAMLs take data paths; each is pointed at a local fixture.
DATA_VARIABLES = ("data_local", "train_file", "eval_file")
LOADER_KEYS = ("train_loader", "eval_loader")
# LLM Foundry's mpt-1b has the shape of MPT-1B-RedPajama, which is 1.3B parameters.
NOMINAL_SIZES = {"mpt-1b": 1.3e9}
# Shrinks a pretraining YAML to a few seconds on CPU; every other key stays as shipped.
CPU_SMOKE_OVERRIDES = [
    "model.d_model=64",
    "model.n_heads=4",
    "model.n_layers=2",
    "model.max_seq_len=64",
    "max_seq_len=64",
    "model.vocab_size=512",
    "max_duration=2ba",
    "global_train_batch_size=4",
    "device_train_microbatch_size=2",
    "device_eval_batch_size=4",
    "eval_interval=2ba",
    "eval_subset_num_batches=1",
    "train_loader.num_workers=0",
    "eval_loader.num_workers=0",
]
JSONL_ROWS = [
    {"prompt": f"def add_{i}(a, b):\n", "response": f"    return a + b + {i}\n"} for i in range(12)
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, mds_dir: Path) -> Path:
    """The fixture MDS under every split name the YAMLs read (train/val, train_small/val_small)."""
    root = tmp_path_factory.mktemp("yaml_data")
    for name, source in {
        "train": "train",
        "val": "val",
        "train_small": "train",
        "val_small": "val",
    }.items():
        shutil.copytree(mds_dir / source, root / name)
    return root


@pytest.fixture(scope="module")
def jsonl_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSON lines file of prompt/response pairs."""
    path = tmp_path_factory.mktemp("yaml_jsonl") / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in JSONL_ROWS))
    return path


@pytest.fixture
def local_paths(data_root: Path, jsonl_file: Path, tokenizer_dir: Path) -> dict[str, Path]:
    """The local stand-ins for the YAMLs' data variables and tokenizer."""
    return {
        "data_local": data_root,
        "train_file": jsonl_file,
        "eval_file": jsonl_file,
        "tokenizer": tokenizer_dir,
    }


def path_overrides(path: Path, paths: Mapping[str, Path]) -> list[str]:
    """Dotlist overrides that point ``path``'s data and tokenizer at the local fixtures."""
    raw = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(raw, dict)
    variables = raw.get("variables") or {}
    overrides = [f"variables.{name}={paths[name]}" for name in DATA_VARIABLES if name in variables]
    return [*overrides, f"tokenizer.name={paths['tokenizer']}"]


def hub_dataset_overrides(cfg: TrainConfig, jsonl_file: Path) -> list[str]:
    """Swap each finetuning loader's hub dataset (not reachable here) for the local JSON lines."""
    overrides = []
    for key in LOADER_KEYS:
        section = getattr(cfg, key)
        if section is None or section.get("name") != "finetuning":
            continue
        dataset = section["dataset"]
        # The file is served as the split the YAML reads (train, test, ...).
        split = dataset.get("split", "train")
        if dataset.get("hf_name") not in (None, "json"):
            overrides += [
                f"{key}.dataset.hf_name=json",
                f"{key}.dataset.hf_kwargs.data_files.{split}={jsonl_file}",
            ]
        elif not Path(str((dataset.get("hf_kwargs") or {}).get("data_dir", "."))).is_dir():
            # A template's placeholder folder (and preprocessing function): prompt/response rows.
            overrides += [
                f"{key}.dataset.hf_kwargs={{data_files: {{{split}: {jsonl_file}}}}}",
                f"{key}.dataset.preprocessing_fn=null",
            ]
    return overrides


def nominal_size(path: Path) -> float | None:
    """The size a file name promises (``mpt-125m`` -> 125e6), or None without one."""
    if path.stem in NOMINAL_SIZES:
        return NOMINAL_SIZES[path.stem]
    match = re.search(r"-(\d+(?:\.\d+)?)([mb])(?:[-_.]|$)", path.stem)
    if match is None:
        return None
    return float(match.group(1)) * {"m": 1e6, "b": 1e9}[match.group(2)]


def format_count(n_params: int) -> str:
    """How the README table states a parameter count (``125.3M``, ``1.32B``)."""
    return f"{n_params / 1e9:.2f}B" if n_params >= 1e9 else f"{n_params / 1e6:.1f}M"


def readme_rows() -> dict[str, list[str]]:
    """The README table's cells, by the YAML path in its first column."""
    rows = {}
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def count_mpt_params(model_section: Mapping[str, Any]) -> int:
    """Parameters of an ``mpt_causal_lm`` section's model, built on the meta device."""
    # The wrapper's own arguments (loss_fn, ...); everything else is an MPTConfig key.
    wrapper_args = {
        name
        for name, param in inspect.signature(ComposerMPTCausalLM).parameters.items()
        if param.kind is not inspect.Parameter.VAR_KEYWORD
    }
    config = build_mpt_config(
        {k: v for k, v in model_section.items() if k != "name" and k not in wrapper_args}
    )
    with torch.device("meta"):
        model = MPTForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("path", YAMLS, ids=IDS)
def test_yaml_loads_and_is_consistent(path: Path, local_paths: dict[str, Path]) -> None:
    cfg, _ = load_config(path, path_overrides(path, local_paths), TrainConfig)
    # Loader samples, the model's context and the tokenizer's limit agree with max_seq_len.
    for key in LOADER_KEYS:
        section = getattr(cfg, key)
        if section is not None:
            assert section["dataset"]["max_seq_len"] == cfg.max_seq_len, key
    if cfg.model["name"] == "mpt_causal_lm":
        assert cfg.model["max_seq_len"] == cfg.max_seq_len
    assert cfg.tokenizer["kwargs"]["model_max_length"] == cfg.max_seq_len
    assert str(path.relative_to(YAML_DIR)) in readme_rows(), "document the YAML in README.md"


@pytest.mark.parametrize("path", YAMLS, ids=IDS)
def test_model_section_builds(path: Path, local_paths: dict[str, Path]) -> None:
    cfg, _ = load_config(path, path_overrides(path, local_paths), TrainConfig)
    section = dict(cfg.model)
    if section["name"] == "mpt_causal_lm":
        assert section.get("loss_fn", "fused_crossentropy") in LOSS_FNS
        n_params = count_mpt_params(section)
        size = nominal_size(path)
        if size is not None:
            assert abs(n_params - size) <= 0.15 * size, f"{n_params:,} parameters"
        stated = readme_rows()[str(path.relative_to(YAML_DIR))]
        assert format_count(n_params) in stated, f"README says {stated}; built {n_params:,}"
    elif section["name"] == "hf_causal_lm":
        # Hub models cannot be downloaded here: check the keys against the constructor.
        kwargs = {k: v for k, v in section.items() if k != "name"}
        check_call_keys(ComposerHFCausalLM, kwargs, "model", reserved={"tokenizer"})
        if section.get("peft_config") is not None:
            build_lora_config(section["peft_config"])
    elif section["name"] == "hf_t5":
        # tests/models/test_hf_t5.py trains this YAML with a tiny local T5.
        kwargs = {k: v for k, v in section.items() if k != "name"}
        check_call_keys(ComposerHFT5, kwargs, "model", reserved={"tokenizer"})
    else:
        pytest.fail(f"add a check for model.name={section['name']!r} to this test")


def test_lora_targets_fit_a_llama_model() -> None:
    """The LoRA examples name module names that a Llama-architecture model has."""
    from peft import get_peft_model

    lora_yamls = [p for p in YAMLS if "lora" in p.stem]
    assert lora_yamls, "a LoRA example ships"
    for path in lora_yamls:
        cfg, _ = load_config(path, [], TrainConfig)
        section = cfg.model["peft_config"]
        model = get_peft_model(tiny_llama(num_hidden_layers=1), build_lora_config(section))
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        wanted = set(section["target_modules"])
        assert trainable and all("lora_" in name for name in trainable), path.name
        assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable} == wanted


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@pytest.mark.parametrize("path", YAMLS, ids=IDS)
def test_loaders_build(
    path: Path, local_paths: dict[str, Path], jsonl_file: Path, tokenizer: Any
) -> None:
    cfg, _ = load_config(path, path_overrides(path, local_paths), TrainConfig)
    cfg, _ = load_config(
        path, [*path_overrides(path, local_paths), *hub_dataset_overrides(cfg, jsonl_file)]
    )
    built = 0
    for key in LOADER_KEYS:
        section = getattr(cfg, key)
        if section is not None:
            spec = build_dataloader_from_section(key, section, tokenizer, device_batch_size=2)
            assert isinstance(spec.dataloader, DataLoader)
            # Packing reads packing_ratio examples for each row it yields.
            assert spec.dataloader.batch_size == 2 * section["dataset"].get("packing_ratio", 1)
            built += 1
    # LLM Foundry's stock YAMLs without an eval split (7b_dolly_sft, hf-llama-3.1-8B) only train.
    assert built == (1 if cfg.eval_loader is None else 2)


def build_training_sections(cfg: TrainConfig) -> None:
    """Build ``cfg``'s optimizer (over a stand-in parameter), scheduler, algorithms and
    callbacks: each raises on a bad section."""
    build_optimizer_from_section(cfg.optimizer, [torch.nn.Parameter(torch.zeros(2))])
    build_scheduler_from_section(cfg.scheduler)
    build_algorithms(cfg.algorithms)
    build_callbacks(cfg.callbacks)


@pytest.mark.parametrize("path", YAMLS, ids=IDS)
def test_training_components_build(path: Path, local_paths: dict[str, Path]) -> None:
    from composer.devices import DeviceCPU

    cfg, _ = load_config(path, path_overrides(path, local_paths), TrainConfig)
    build_tokenizer_from_section(cfg.tokenizer)
    build_training_sections(cfg)
    if cfg.fsdp_config is not None:
        check_fsdp_config(cfg.fsdp_config)
    # A multi-GPU YAML's batch splits over a node of 8 GPUs (and any one YAML runs on 1 process).
    for world_size in (1, 8) if cfg.fsdp_config is not None else (1,):
        compute_batch_sizes(cfg, world_size, DeviceCPU())


def test_tiny_finetune_starts_from_the_tiny_pretrained_shape() -> None:
    pretrain = OmegaConf.load(YAML_DIR / "pretrain/mpt-tiny-cpu.yaml")
    finetune = OmegaConf.load(YAML_DIR / "finetune/mpt-tiny-cpu-jsonl.yaml")
    assert finetune.model == pretrain.model
    assert finetune.variables.max_seq_len == pretrain.variables.max_seq_len
    assert finetune.load_weights_only is True


@pytest.mark.parametrize("name", ["pretrain/testing.yaml", "pretrain/mpt-125m.yaml"])
def test_gpu_pretraining_yaml_trains_on_cpu(name: str, local_paths: dict[str, Path]) -> None:

    path = YAML_DIR / name
    overrides = [*path_overrides(path, local_paths), *CPU_SMOKE_OVERRIDES]
    cfg, resolved = load_config(path, overrides, TrainConfig)
    # The GPU settings the CPU run must cope with, untouched by the overrides.
    assert cfg.precision == "amp_bf16"
    assert cfg.model["attn_config"]["attn_impl"] == "flash"
    assert cfg.model["loss_fn"] == "fused_crossentropy"
    assert cfg.model["init_device"] == "meta"
    assert cfg.fsdp_config is not None
    _, memory, losses = train_in_memory(cfg, resolved, batches=2)
    # An untrained model: about uniform over the 512 tokens, plus ~1 nat from the spread of its
    # initial logits (kaiming-initialized tied embeddings give them a variance of about 2).
    assert math.log(512) < losses[0] < math.log(512) + 2.0, losses
    eval_losses = [float(v) for _, v in memory.data["metrics/eval/LanguageCrossEntropy"]]
    assert len(eval_losses) == 1 and math.isfinite(eval_losses[0])


def test_tiny_finetune_yaml_trains_from_a_pretrained_checkpoint(
    local_paths: dict[str, Path], trained_run: TrainedRun
) -> None:
    path = YAML_DIR / "finetune/mpt-tiny-cpu-jsonl.yaml"
    # The shape of the checkpoint at hand (the command tests' tiny run) instead of the demo's.
    overrides = [
        *path_overrides(path, local_paths),
        f"variables.pretrained_checkpoint={trained_run.checkpoint}",
        "variables.max_seq_len=64",
        "model.d_model=64",
        "model.n_heads=4",
        "model.n_layers=2",
        "model.expansion_ratio=2",
        "model.vocab_size=512",
        "max_duration=2ba",
    ]
    cfg, resolved = load_config(path, overrides, TrainConfig)
    _, memory, losses = train_in_memory(cfg, resolved, batches=2)
    # The pretrained weights were loaded: a fresh model starts at about ln(512) + 1 (see the
    # pretraining test above); this one, trained on similar text, starts below ln(512) + 0.5.
    assert losses[0] < math.log(512) + 0.5, losses
    eval_losses = [float(v) for _, v in memory.data["metrics/eval/LanguageCrossEntropy"]]
    # eval_first, then eval_interval: 1ep after each epoch (12 rows in batches of 8: one batch).
    assert len(eval_losses) == 3 and all(math.isfinite(loss) for loss in eval_losses)
