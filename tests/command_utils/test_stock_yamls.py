"""Every stock training YAML (scripts/train/yamls/** and scripts/train/finetune_example/) builds
its model through the registry builders, the finetuning example's data reaches the model in the
format its preprocessing function defines, and the CPU-sized YAMLs train two batches.

Only paths change: data, the tokenizer, and hub model names, which get a tiny local folder of
the same architecture (nothing is downloaded). Large MPTs are built on the meta device
(``model.init_device=meta`` inside ``torch.device("meta")``), so a 70B model builds in about a
second. Loaders and the other components of scripts/train/yamls are built by
test_shipped_yamls.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from omegaconf import OmegaConf
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llmfoundry.data.finetuning import dataset_constructor
from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM
from llmfoundry.models.hf.export import save_mpt_as_hf
from llmfoundry.models.hf.hf_causal_lm import ComposerHFCausalLM
from llmfoundry.utils.builders import (
    build_composer_model_from_section,
    build_dataloader_from_section,
)
from llmfoundry.utils.config_utils import TrainConfig, load_config
from tests import REPO
from tests.fixtures import VOCAB, save_tiny_llama, tiny_config, tiny_model

from .conftest import train_in_memory, write_token_mds
from .test_shipped_yamls import build_training_sections, count_mpt_params, path_overrides

TRAIN_DIR = REPO / "scripts/train"
EXAMPLE_DIR = TRAIN_DIR / "finetune_example"
STOCK_YAMLS = sorted((TRAIN_DIR / "yamls").rglob("*.yaml")) + sorted(EXAMPLE_DIR.glob("*.yaml"))
IDS = [str(p.relative_to(TRAIN_DIR)) for p in STOCK_YAMLS]
EXAMPLES = sorted(EXAMPLE_DIR.glob("*.yaml"))

# The architecture of each hub model a stock YAML names; a tiny folder of it stands in.
HUB_ARCHITECTURES = {
    "gpt2": "gpt2",
    "EleutherAI/gpt-neo-125M": "gpt_neo",
    "facebook/opt-2.7b": "opt",
    "meta-llama/Meta-Llama-3.1-8B": "llama",
    "meta-llama/Meta-Llama-3-8B": "llama",
    "TinyLlama/TinyLlama_v1.1": "llama",
    "mosaicml/mpt-7b": "mpt",
    "mosaicml/mpt-30b": "mpt",
}
# Keys of a model section that configure the Composer wrapper, not the architecture.
WRAPPER_KEYS = {"name", "init_device", "loss_fn", "pretrained_model_name_or_path"}


def _tiny_hf_model(kind: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    eos, pad = cast(int, tokenizer.eos_token_id), cast(int, tokenizer.pad_token_id)
    ids: dict[str, Any] = {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": pad}
    if kind == "gpt2":
        return GPT2LMHeadModel(
            GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=1024, **ids)
        )
    if kind == "gpt_neo":
        config = GPTNeoConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            attention_types=[[["global", "local"], 1]],
            window_size=16,
            max_position_embeddings=64,
            **ids,
        )
        return GPTNeoForCausalLM(config)
    assert kind == "opt", kind
    config = OPTConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=32,
        max_position_embeddings=64,
        **ids,
    )
    return OPTForCausalLM(config)


@pytest.fixture(scope="module")
def tiny_hub(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> dict[str, Path]:
    """A saved tiny model (weights and config) of each architecture in HUB_ARCHITECTURES."""
    root = tmp_path_factory.mktemp("tiny_hub")
    folders = {}
    for kind in sorted(set(HUB_ARCHITECTURES.values())):
        folder = root / kind
        if kind == "llama":
            save_tiny_llama(folder, tokenizer)
        elif kind == "mpt":
            # ALiBi and no learned positions, like the MPT hub models: max_seq_len may grow.
            config = tiny_config(vocab_size=VOCAB, attn_config={"alibi": True})
            config.learned_pos_emb = False
            save_mpt_as_hf(tiny_model(config), tokenizer, folder, "fp32")
        else:
            torch.manual_seed(0)
            _tiny_hf_model(kind, tokenizer).save_pretrained(folder)
        folders[kind] = folder
    return folders


@pytest.fixture(scope="module")
def yaml_paths(
    tmp_path_factory: pytest.TempPathFactory,
    mds_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    corpus_texts: list[str],
    tokenizer_dir: Path,
) -> dict[str, Path]:
    """Local stand-ins for the YAMLs' data variables and tokenizer (data_local: 128-token MDS
    samples, the length of the CPU pretraining YAML, under both split spellings)."""
    root = tmp_path_factory.mktemp("stock_data")
    ids: list[int] = []
    for text in corpus_texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    cut = int(len(ids) * 0.9)
    for split, part in (("train", ids[:cut]), ("val", ids[cut:])):
        write_token_mds(root / split, part, 128)
        write_token_mds(root / f"{split}_small", part, 128)
    jsonl = root / "pairs.jsonl"
    jsonl.write_text('{"prompt": "a", "response": "b"}\n')
    return {"data_local": root, "train_file": jsonl, "eval_file": jsonl, "tokenizer": tokenizer_dir}


def _config_value(config: Any, key: str) -> Any:
    value = config.get(key) if isinstance(config, Mapping) else getattr(config, key)
    if isinstance(value, torch.dtype):  # a config's dtype, given in a YAML as 'bfloat16'
        return str(value).removeprefix("torch.")
    return value.to_dict() if isinstance(value, PretrainedConfig) else value


def assert_config_has(config: Any, expected: Mapping[str, Any], where: str) -> None:
    """Every key of ``expected`` has its value in ``config`` (mappings compared key by key)."""
    for key, value in expected.items():
        actual = _config_value(config, key)
        if isinstance(value, Mapping):
            assert_config_has(actual, value, f"{where}.{key}")
        else:
            assert actual == value, f"{where}.{key}: built {actual!r}, YAML says {value!r}"


def hub_name(path: Path, paths: Mapping[str, Path]) -> str:
    cfg, _ = load_config(path, path_overrides(path, paths), TrainConfig)
    return str(cfg.model["pretrained_model_name_or_path"])


@pytest.mark.parametrize("path", STOCK_YAMLS, ids=IDS)
def test_stock_yaml_model_builds(
    path: Path,
    yaml_paths: dict[str, Path],
    tiny_hub: dict[str, Path],
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    overrides = path_overrides(path, yaml_paths)
    if (
        "use_flash_attention_2" in path.read_text()
        and importlib.util.find_spec("flash_attn") is None
    ):
        # FlashAttention-2 is a GPU extra; where it is missing, the same model with SDPA.
        overrides.append("model.use_flash_attention_2=false")
    name = OmegaConf.load(path).model.name
    if name == "mpt_causal_lm":
        cfg, _ = load_config(path, [*overrides, "model.init_device=meta"], TrainConfig)
        with torch.device("meta"):
            model = build_composer_model_from_section(cfg.model, tokenizer)
        assert isinstance(model, ComposerMPTCausalLM)
        assert {p.device.type for p in model.parameters()} == {"meta"}
        assert model.n_total_params == count_mpt_params(cfg.model)
        architecture = {k: v for k, v in cfg.model.items() if k not in WRAPPER_KEYS}
        assert_config_has(model.model.config, architecture, "model")
        return
    if name == "hf_t5":
        return  # tests/models/test_hf_t5.py builds and trains this YAML with a tiny local T5
    assert name == "hf_causal_lm", f"add a check for model.name={name!r} to this test"
    kind = HUB_ARCHITECTURES[hub_name(path, yaml_paths)]
    folder = tiny_hub[kind]
    cfg, _ = load_config(
        path, [*overrides, f"model.pretrained_model_name_or_path={folder}"], TrainConfig
    )
    model = build_composer_model_from_section(cfg.model, tokenizer)
    assert isinstance(model, ComposerHFCausalLM)
    config = model.model.config
    assert config.model_type == json.loads((folder / "config.json").read_text())["model_type"]
    assert_config_has(config, cfg.model.get("config_overrides") or {}, "model.config_overrides")
    if cfg.model.get("pretrained", True):  # the stand-in's saved weights were loaded
        saved = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        embeddings = [
            cast(torch.Tensor, m.get_input_embeddings().weight).float()
            for m in (model.model, saved)
        ]
        assert torch.equal(*embeddings)


@pytest.fixture
def in_train_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run from scripts/train, as the finetuning example's relative paths expect (only loaders
    are built there: nothing is written)."""
    monkeypatch.chdir(TRAIN_DIR)
    monkeypatch.syspath_prepend(str(TRAIN_DIR))
    yield


@pytest.mark.usefixtures("in_train_dir")
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_finetune_example_feeds_preprocessed_rows(
    path: Path, yaml_paths: dict[str, Path], tokenizer: PreTrainedTokenizerBase
) -> None:
    cfg, _ = load_config(path, path_overrides(path, yaml_paths), TrainConfig)
    spec = build_dataloader_from_section(
        "train_loader", cfg.train_loader, tokenizer, device_batch_size=2
    )
    batch = next(iter(spec.dataloader))
    example = importlib.import_module("finetune_example.preprocessing")
    multiple_choice = example.multiple_choice
    assert dataset_constructor.get(example.REGISTERED_NAME) is multiple_choice
    lines = (EXAMPLE_DIR / "train.jsonl").read_text().splitlines()
    answers = {multiple_choice(json.loads(line))["response"] for line in lines}
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        text = str(tokenizer.decode(ids[ids != tokenizer.pad_token_id]))
        assert text.startswith("Question: ") and "\n\nOptions:\n - " in text, text
        # The loss is on the answer only: the labelled tokens spell one of the choices.
        target = str(tokenizer.decode(labels[labels != -100])).replace(str(tokenizer.eos_token), "")
        assert target in answers and text.split("\nAnswer: ")[1].startswith(target), target
    build_training_sections(cfg)


# The CPU-sized stock YAMLs; only data, tokenizer, hub model paths and max_duration change.
CPU_YAMLS = ["yamls/pretrain/mpt-small-cpu.yaml", "finetune_example/gpt2-arc-easy--cpu.yaml"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@pytest.mark.parametrize("name", CPU_YAMLS)
def test_cpu_stock_yaml_trains_two_batches(
    name: str,
    yaml_paths: dict[str, Path],
    tiny_hub: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = TRAIN_DIR / name
    overrides = [*path_overrides(path, yaml_paths), "max_duration=2ba"]
    if path.parent == EXAMPLE_DIR:
        # Run where the test runs (a temporary folder, which receives the run's files); the
        # example's relative data folder and module are found from scripts/train.
        monkeypatch.syspath_prepend(str(TRAIN_DIR))
        overrides += [
            f"train_loader.dataset.hf_kwargs.data_dir={EXAMPLE_DIR}",
            f"model.pretrained_model_name_or_path={tiny_hub['gpt2']}",
        ]
    cfg, resolved = load_config(path, overrides, TrainConfig)
    trainer, memory, losses = train_in_memory(cfg, resolved, batches=2)
    assert cfg.global_train_batch_size is not None
    assert trainer.state.timestamp.sample.value == 2 * cfg.global_train_batch_size
    if name.endswith("mpt-small-cpu.yaml"):
        # 256 sequences in 16 microbatches of 16; an untrained model spreads its guesses over
        # all 50368 tokens of the GPT-NeoX vocabulary.
        assert trainer.state.device_train_microbatch_size == 16
        assert abs(losses[0] - math.log(50368)) < 1.0, losses
        eval_losses = memory.data["metrics/eval/LanguageCrossEntropy"]
        assert len(eval_losses) == 1  # at the end of training (eval_interval 5ba > 2ba)
