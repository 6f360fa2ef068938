"""merge_lora: a LoRA adapter folded into its base gives a standalone folder with the same logits
as base + adapter, loadable without peft; adapters made for another base are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from llmfoundry.command_utils.merge_lora import merge_lora
from llmfoundry.inference.generate import load_model_and_tokenizer
from llmfoundry.inference.model_loading import ModelSource
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from tests import REPO
from tests.command_utils.tiny_models import run_script
from tests.fixtures import save_lora_adapter, save_tiny_llama, save_tiny_mpt

IDS = torch.randint(2, 512, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A folder of tiny bases and adapters: ``llama``, ``mpt``, ``llama64`` (hidden 64) and
    adapters ``lora`` (Llama q/v), ``lora_mpt`` (MPT Wqkv), ``lora64`` (on ``llama64``)."""
    root = tmp_path_factory.mktemp("lora")
    save_tiny_llama(root / "llama", tokenizer)
    save_tiny_llama(root / "llama64", tokenizer, hidden=64)
    save_tiny_mpt(root / "mpt", tokenizer)
    save_lora_adapter(
        LlamaForCausalLM.from_pretrained(root / "llama"), root / "lora", ["q_proj", "v_proj"]
    )
    save_lora_adapter(
        LlamaForCausalLM.from_pretrained(root / "llama64"), root / "lora64", ["q_proj"]
    )
    mpt = AutoModelForCausalLM.from_pretrained(root / "mpt", trust_remote_code=True)
    save_lora_adapter(mpt, root / "lora_mpt", ["Wqkv"])
    return root


@torch.no_grad()
def _logits(model: torch.nn.Module) -> torch.Tensor:
    return model.eval()(input_ids=IDS).logits


def _peft_logits(models: Path, base: str, adapter: str, trust: bool = False) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(models / base, trust_remote_code=trust)
    return _logits(peft.PeftModel.from_pretrained(model, models / adapter))


def test_merged_llama_has_the_logits_of_base_plus_adapter(models: Path, tmp_path: Path) -> None:
    out = merge_lora(str(models / "llama"), str(models / "lora"), tmp_path / "merged")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "adapter_config.json" not in names
    weights = load_file(out / "model.safetensors")
    base_weights = load_file(models / "llama" / "model.safetensors")
    assert set(weights) == set(base_weights), "plain weight names, no lora_ tensors"
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not isinstance(merged, peft.PeftModel)
    expected = _peft_logits(models, "llama", "lora")
    torch.testing.assert_close(_logits(merged), expected)
    base = _logits(AutoModelForCausalLM.from_pretrained(models / "llama"))
    assert not torch.allclose(base, expected, atol=1e-3), "the adapter changes the model"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "no staging folder left"


def test_merged_folder_loads_without_peft(models: Path, tmp_path: Path) -> None:
    out = merge_lora(str(models / "llama"), str(models / "lora"), tmp_path / "merged")
    logits_file = tmp_path / "logits.pt"
    # A fresh interpreter in which importing peft fails.
    code = (
        "import sys; sys.modules['peft'] = None\n"
        "import torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(out)!r}).eval()\n"
        f"ids = torch.load({str(tmp_path / 'ids.pt')!r})\n"
        "with torch.no_grad():\n"
        f"    torch.save(model(input_ids=ids).logits, {str(logits_file)!r})\n"
    )
    torch.save(IDS, tmp_path / "ids.pt")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    torch.testing.assert_close(torch.load(logits_file), _peft_logits(models, "llama", "lora"))


def test_merged_mpt_ships_its_code_and_matches(models: Path, tmp_path: Path) -> None:
    out = merge_lora(
        str(models / "mpt"), str(models / "lora_mpt"), tmp_path / "merged", trust_remote_code=True
    )
    assert {"modeling_mpt.py", "configuration_mpt.py"} <= {p.name for p in out.iterdir()}
    merged = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    torch.testing.assert_close(_logits(merged), _peft_logits(models, "mpt", "lora_mpt", True))


def test_bf16_output_and_the_adapter_folders_tokenizer(
    models: Path, tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for item in (models / "lora").iterdir():
        (adapter / item.name).write_bytes(item.read_bytes())
    finetuned = AutoTokenizer.from_pretrained(models / "llama")
    finetuned.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    finetuned.save_pretrained(adapter)
    out = merge_lora(str(models / "llama"), str(adapter), tmp_path / "merged", "bf16")
    fp32 = merge_lora(str(models / "llama"), str(adapter), tmp_path / "merged32", "fp32")
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    # The merge runs in fp32; only the result is rounded.
    bf16_weights = load_file(out / "model.safetensors")
    for name, weight in load_file(fp32 / "model.safetensors").items():
        assert torch.equal(bf16_weights[name], weight.to(torch.bfloat16)), name
    merged_tokenizer = AutoTokenizer.from_pretrained(out)
    assert merged_tokenizer.chat_template == finetuned.chat_template
    # Saved as it was, not with the left padding generation switches to.
    assert merged_tokenizer.padding_side == tokenizer.padding_side == "right"


@pytest.mark.parametrize(
    ("adapter", "detail"),
    [
        ("lora_mpt", r"Target modules \{'Wqkv'\} not found in the base model"),
        ("lora64", r"size mismatch for .*q_proj\.lora_A.*torch\.Size\(\[4, 64\]\)"),
    ],
)
def test_an_adapter_for_another_base_is_a_one_line_error(
    models: Path, tmp_path: Path, adapter: str, detail: str
) -> None:
    pattern = rf"--adapter='{models / adapter}' does not fit the base model \({detail}.*\); use the base model"
    with pytest.raises(ConfigError, match=pattern):
        merge_lora(str(models / "llama"), str(models / adapter), tmp_path / "out")
    with pytest.raises(ConfigError, match=pattern):
        load_model_and_tokenizer(ModelSource(str(models / "llama"), adapter=str(models / adapter)))
    assert not (tmp_path / "out").exists()
    result = run_script(
        REPO / "scripts/inference/merge_lora.py",
        "--base", str(models / "llama"),
        "--adapter", str(models / adapter),
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --adapter='{models / adapter}' does not fit the base model (")
    assert not (tmp_path / "out").exists()


def test_missing_or_wrong_folders_are_named(models: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"--adapter='.*nothing': no such folder"):
        merge_lora(str(models / "llama"), str(tmp_path / "nothing"), tmp_path / "out")
    with pytest.raises(
        MissingFileError, match=r"--adapter='.*llama64' has no adapter_config\.json"
    ):
        merge_lora(str(models / "llama"), str(models / "llama64"), tmp_path / "out")
    with pytest.raises(MissingFileError, match=r"--base: model folder '.*nobase'"):
        merge_lora(str(tmp_path / "nobase"), str(models / "lora"), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"--output_precision='int8'"):
        merge_lora(str(models / "llama"), str(models / "lora"), tmp_path / "out", "int8")


def test_script_writes_the_merged_folder(models: Path, tmp_path: Path) -> None:
    result = run_script(
        REPO / "scripts/inference/merge_lora.py",
        "--base", str(models / "llama"),
        "--adapter", str(models / "lora"),
        "--output", str(tmp_path / "merged"),
        "--output_precision", "fp16",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"merged model written to {tmp_path / 'merged'}"
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert next(merged.parameters()).dtype == torch.float16
