"""Export to Hugging Face format: the folder loads with trust_remote_code and generates exactly like the checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmfoundry.command_utils.convert_composer_to_hf import convert_composer_to_hf
from llmfoundry.inference.generate import generate, load_model_and_tokenizer
from llmfoundry.inference.model_loading import ModelSource
from llmfoundry.models.hf import ComposerMPTCausalLM
from llmfoundry.utils.checkpoint_utils import load_composer_checkpoint
from tests import REPO
from tests.models.transformers_only import without_llmfoundry_auto_classes

from .conftest import TrainedRun

PROMPTS = ["def ", "    return self."]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory, trained_run: TrainedRun) -> Path:
    out = tmp_path_factory.mktemp("export") / "hf"
    return convert_composer_to_hf(str(trained_run.checkpoint), str(out), output_precision="fp32")


def _composer_model_from_checkpoint(checkpoint: Path, tokenizer_dir: Path) -> ComposerMPTCausalLM:
    """Rebuild the trained Composer model from its checkpoint, the way training built it."""
    from llmfoundry.utils.tokenizer_utils import build_tokenizer

    state = load_composer_checkpoint(checkpoint)
    config = state["state"]["integrations"]["huggingface"]["model"]["config"]["content"]
    keys = (
        "d_model",
        "n_heads",
        "n_layers",
        "expansion_ratio",
        "max_seq_len",
        "vocab_size",
        "attn_config",
    )
    model = ComposerMPTCausalLM(
        tokenizer=build_tokenizer(str(tokenizer_dir)), **{k: config[k] for k in keys}
    )
    model.load_state_dict(state["state"]["model"])
    return model.eval()


def test_export_folder_is_complete(hf_dir: Path) -> None:
    names = {p.name for p in hf_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modeling_mpt.py",
        "configuration_mpt.py",
    } <= names
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_mpt.MPTForCausalLM"
    # The run's config (learned positions) is not one transformers' native MPT can run, so only
    # our exported code may load it.
    assert config["model_type"] == "llmfoundry_mpt"
    assert not any(p.name.startswith(".") for p in hf_dir.parent.iterdir()), (
        "no staging folder left behind"
    )
    # Tools that load only the tokenizer do it without trust_remote_code.
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    assert tokenizer.decode(tokenizer("def f(x):")["input_ids"]) == "def f(x):"


def test_exported_greedy_generation_equals_checkpoint(
    hf_dir: Path, trained_run: TrainedRun, tokenizer_dir: Path
) -> None:
    composer_model = _composer_model_from_checkpoint(trained_run.checkpoint, tokenizer_dir)
    with without_llmfoundry_auto_classes():  # as where llmfoundry is not installed
        hf_model: Any = AutoModelForCausalLM.from_pretrained(str(hf_dir), trust_remote_code=True)
    hf_model.eval()
    assert type(hf_model).__name__ == "MPTForCausalLM"
    assert type(hf_model).__module__.startswith("transformers_modules"), (
        "loaded from the exported code"
    )
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), trust_remote_code=True)
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            expected = cast(Any, composer_model.model).generate(
                **ids, max_new_tokens=20, do_sample=False
            )
            got = hf_model.generate(**ids, max_new_tokens=20, do_sample=False)
            torch.testing.assert_close(hf_model(**ids).logits, composer_model.model(**ids).logits)
        assert torch.equal(got, expected)


def test_generate_helper_batches_with_left_padding(hf_dir: Path) -> None:
    model, tokenizer = load_model_and_tokenizer(ModelSource(str(hf_dir), trust_remote_code=True))
    together = generate(model, tokenizer, PROMPTS, max_new_tokens=12, do_sample=False)
    alone = [
        generate(model, tokenizer, [p], max_new_tokens=12, do_sample=False)[0] for p in PROMPTS
    ]
    assert [g.continuation for g in together] == [g.continuation for g in alone]


def test_bf16_export_halves_the_weights(
    hf_dir: Path, trained_run: TrainedRun, tmp_path: Path
) -> None:
    out = convert_composer_to_hf(
        str(trained_run.checkpoint), str(tmp_path / "bf16"), output_precision="bf16"
    )
    model = AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True)
    assert next(model.parameters()).dtype == torch.bfloat16
    fp32_size = (hf_dir / "model.safetensors").stat().st_size
    assert (out / "model.safetensors").stat().st_size < 0.6 * fp32_size


def test_scripts_convert_then_generate(trained_run: TrainedRun, tmp_path: Path) -> None:
    out = tmp_path / "scripted"
    convert = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/inference/convert_composer_to_hf.py"),
            "--composer_path",
            str(trained_run.checkpoint),
            "--hf_output_path",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert convert.returncode == 0, convert.stderr[-2000:]
    gen = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/inference/hf_generate.py"),
            "--name_or_path",
            str(out),
            "--trust_remote_code",
            "--prompts",
            "def ",
            "--max_new_tokens",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert "def " in gen.stdout


def test_convert_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/inference/convert_composer_to_hf.py"),
            "--composer_path",
            str(tmp_path / "missing.pt"),
            "--hf_output_path",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: checkpoint '{tmp_path / 'missing.pt'}' does not exist; pass the .pt file Composer saved"
    )
    assert not (tmp_path / "out").exists()
