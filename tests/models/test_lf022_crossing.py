"""MPT folders cross between LLM Foundry 0.22, the Hub's MPT layout and ours, without remote code.

Three folder layouts are written here from their documented key names: LLM Foundry 0.22's
export (``model_type: mpt``, learned positions, its 0.22 defaults such as
``attn_temperature_tuning`` and ``nope``, its tokenizer files), ``mosaicml/mpt-7b``'s Hub layout
(ALiBi, ``pytorch_model.bin``), and our own export (``model_type: llmfoundry_mpt``). The Python
files a folder ships raise when run, so every load here proves that none of it ran. Each folder
must load as our ``MPTForCausalLM`` after ``import llmfoundry`` and compute our model's logits;
transformers' ``MptForCausalLM``, which ignores learned positions, must never be picked.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from llmfoundry.inference.generate import (
    generate,
    generate_from_pretrained,
    load_model_and_tokenizer,
)
from llmfoundry.inference.options import ModelSource, Sampling
from llmfoundry.models.hf import ComposerHFCausalLM
from llmfoundry.models.hf.export import save_mpt_as_hf
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.utils.tokenizer_utils import build_tokenizer
from tests.fixtures import tiny_config, tiny_model
from tests.models.mpt_helpers import AUTO_MAP, lf022_config_json, mpt_7b_config_json

VOCAB = 512  # the tokenizer fixture's size
SHIPPED_CODE = 'raise RuntimeError("the code this folder ships ran")\n'
PROMPTS = ["def decode(self, s", "    return self."]
LOADER = "llmfoundry.models.hf.loading"


def _ship_code(folder: Path) -> None:
    """The files ``auto_map`` names, which fail if anything imports them."""
    for name in ("configuration_mpt.py", "modeling_mpt.py"):
        (folder / name).write_text(SHIPPED_CODE)


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2))


def _write_lf022_tokenizer(
    tokenizer: PreTrainedTokenizerBase, tokenizer_dir: Path, folder: Path
) -> None:
    """The tokenizer files transformers 4.51 writes for a fast tokenizer (0.22's exports)."""
    shutil.copy(tokenizer_dir / "tokenizer.json", folder / "tokenizer.json")
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}
    added = {
        str(tokenizer.convert_tokens_to_ids(token)): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token in ("<|endoftext|>", "<|pad|>")
    }
    tokenizer_config = {
        "added_tokens_decoder": added,
        **special,
        "clean_up_tokenization_spaces": False,
        "extra_special_tokens": {},
        "model_max_length": 128,
        "tokenizer_class": "PreTrainedTokenizer",  # 4.x drops "Fast" from the class name
    }
    _write_json(folder / "tokenizer_config.json", tokenizer_config)
    _write_json(folder / "special_tokens_map.json", special)


def write_lf022_export(
    model: MPTForCausalLM, tokenizer: PreTrainedTokenizerBase, tokenizer_dir: Path, folder: Path
) -> Path:
    """A folder in the layout of LLM Foundry 0.22's HF export of ``model``."""
    folder.mkdir(parents=True)
    _write_json(folder / "config.json", lf022_config_json(model.config))
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    generation = {"_from_model_config": True, "transformers_version": "4.51.3", "use_cache": False}
    _write_json(folder / "generation_config.json", generation)
    _write_lf022_tokenizer(tokenizer, tokenizer_dir, folder)
    _ship_code(folder)
    return folder


def write_hub_mpt(model: MPTForCausalLM, folder: Path) -> Path:
    """A folder in the layout of ``mosaicml/mpt-7b`` on the Hub (ALiBi, ``.bin`` weights)."""
    folder.mkdir(parents=True)
    config = model.config
    hub_config = mpt_7b_config_json(
        d_model=config.d_model,
        n_heads=config.n_heads,
        n_layers=config.n_layers,
        max_seq_len=config.max_seq_len,
        vocab_size=config.vocab_size,
        torch_dtype="float32",
    )
    _write_json(folder / "config.json", hub_config)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    _ship_code(folder)
    return folder


@pytest.fixture(scope="module")
def learned() -> MPTForCausalLM:
    """A tiny MPT with learned positions and biases (LLM Foundry's defaults)."""
    return tiny_model(tiny_config(vocab_size=VOCAB, no_bias=False), seed=3)


@pytest.fixture(scope="module")
def alibi() -> MPTForCausalLM:
    """A tiny MPT that mpt-7b's layout describes (ALiBi, no biases, 4x MLP)."""
    config = tiny_config({"alibi": True}, vocab_size=VOCAB, no_bias=True, expansion_ratio=4)
    return tiny_model(config, seed=4)


@pytest.fixture(scope="module")
def folders(
    tmp_path_factory: pytest.TempPathFactory,
    learned: MPTForCausalLM,
    alibi: MPTForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    tokenizer_dir: Path,
) -> dict[str, tuple[Path, MPTForCausalLM]]:
    """Each layout's folder and the model whose weights it holds."""
    root = tmp_path_factory.mktemp("crossing")
    # The export sets auto_map on the config it writes: export a copy.
    copy = tiny_model(MPTConfig.from_dict(learned.config.to_dict()), seed=3)
    assert torch.equal(copy.transformer.wpe.weight, learned.transformer.wpe.weight)
    ours = save_mpt_as_hf(copy, tokenizer, root / "ours", "fp32")
    return {
        "lf022": (write_lf022_export(learned, tokenizer, tokenizer_dir, root / "lf022"), learned),
        "hub": (write_hub_mpt(alibi, root / "hub"), alibi),
        "ours": (ours, learned),
    }


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def _ids() -> torch.Tensor:
    return torch.randint(2, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layout", ["lf022", "hub", "ours"])
@pytest.mark.parametrize("trust_remote_code", [False, True])
def test_folder_loads_as_our_class_through_transformers_auto_classes(
    folders: dict[str, tuple[Path, MPTForCausalLM]], layout: str, trust_remote_code: bool
) -> None:
    folder, reference = folders[layout]
    assert type(AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)) is (
        MPTConfig
    )
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust_remote_code)
    assert type(model) is MPTForCausalLM
    ids = _ids()
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), atol=1e-6, rtol=0)


def test_our_export_of_learned_positions_is_marked_for_our_code(
    folders: dict[str, tuple[Path, MPTForCausalLM]],
) -> None:
    folder, _ = folders["ours"]
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["auto_map"]) == ("llmfoundry_mpt", AUTO_MAP)
    assert config["learned_pos_emb"] is True
    assert (folder / "configuration_mpt.py").is_file() and (folder / "modeling_mpt.py").is_file()


@pytest.mark.slow  # the first ComposerHFCausalLM of a process imports every transformers LM
@pytest.mark.parametrize("layout", ["lf022", "ours"])
def test_learned_positions_load_in_our_loaders_with_one_log_line(
    folders: dict[str, tuple[Path, MPTForCausalLM]],
    layout: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder, reference = folders[layout]
    ids = _ids()
    loaders: dict[str, Callable[[], Any]] = {
        "ComposerHFCausalLM": lambda: ComposerHFCausalLM(None, str(folder)).model,
        "load_model_and_tokenizer": lambda: load_model_and_tokenizer(ModelSource(str(folder)))[0],
    }
    for loader_name, load in loaders.items():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOADER):
            model = load()
        assert type(model) is MPTForCausalLM, loader_name
        torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), atol=1e-6, rtol=0)
        lines = [r.getMessage() for r in caplog.records if r.name == LOADER]
        assert len(lines) == 1, (loader_name, lines)
        assert "learned_pos_emb: true" in lines[0] and "llmfoundry's MPTForCausalLM" in lines[0]


def test_hub_layout_that_native_mpt_can_run_logs_nothing(
    folders: dict[str, tuple[Path, MPTForCausalLM]], caplog: pytest.LogCaptureFixture
) -> None:
    folder, reference = folders["hub"]
    with caplog.at_level(logging.INFO, logger=LOADER):
        model = ComposerHFCausalLM(None, str(folder)).model
    assert type(model) is MPTForCausalLM
    assert [r for r in caplog.records if r.name == LOADER] == []
    ids = _ids()
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), atol=1e-6, rtol=0)


def test_greedy_generation_from_a_lf022_folder_equals_our_model(
    folders: dict[str, tuple[Path, MPTForCausalLM]], tokenizer_dir: Path
) -> None:
    folder, reference = folders["lf022"]
    left_padded = build_tokenizer(str(tokenizer_dir))
    left_padded.padding_side = "left"
    expected = [g.continuation for g in generate(reference, left_padded, PROMPTS, 8)]
    run = generate_from_pretrained(
        ModelSource(str(folder), device="cpu"), PROMPTS, Sampling(max_new_tokens=8), warmup=False
    )
    assert [g.continuation for g in run.generations] == expected
    assert all(expected), "greedy continuations are not empty"


def test_exported_tokenizer_names_a_class_transformers_4_has(
    folders: dict[str, tuple[Path, MPTForCausalLM]], tokenizer: PreTrainedTokenizerBase
) -> None:
    folder, _ = folders["ours"]
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    reloaded = AutoTokenizer.from_pretrained(folder)
    text = "def f(x):\n    return x + 1  # <|pad|>"
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (reloaded.eos_token, reloaded.pad_token) == (tokenizer.eos_token, tokenizer.pad_token)


def test_lf022_tokenizer_files_load_in_ours(
    folders: dict[str, tuple[Path, MPTForCausalLM]],
    tokenizer: PreTrainedTokenizerBase,
    tmp_path: Path,
) -> None:
    folder, _ = folders["lf022"]
    only_tokenizer = tmp_path / "tokenizer"
    only_tokenizer.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(folder / name, only_tokenizer / name)
    text = "class Decoder:\n    pass"
    for path in (folder, only_tokenizer):  # with and without the model's config.json beside it
        loaded = build_tokenizer(str(path))
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert (loaded.eos_token_id, loaded.pad_token_id) == (0, 1)
