"""``import llmfoundry`` registers our MPT with transformers' Auto classes; foreign code stays gated.

Our ``MPTConfig``/``MPTForCausalLM`` answer for ``model_type`` ``mpt`` and ``llmfoundry_mpt``, so
transformers' own MPT folders keep computing what the native class computes, and a folder that
ships code for any other ``model_type`` still needs ``trust_remote_code``: every loader refuses
it naming the switch in its own terms, and the shipped code never runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    MptConfig,
    MptForCausalLM,
    PreTrainedTokenizerBase,
)

from llmfoundry.command_utils.convert_composer_to_hf import check_model_generates
from llmfoundry.inference.generate import load_model_and_tokenizer
from llmfoundry.inference.options import ModelSource
from llmfoundry.models.hf import ComposerHFCausalLM
from llmfoundry.models.hf.export import save_mpt_as_hf
from llmfoundry.models.hf.loading import register_auto_classes
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM, MPTModel
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import randomize, tiny_config, tiny_model
from tests.models.mpt_helpers import assert_close, generate, random_ids

SHIPPED_CODE = 'raise RuntimeError("the code this folder ships ran")\n'


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_auto_classes_build_our_mpt_for_both_model_types() -> None:
    for model_type in ("mpt", "llmfoundry_mpt"):
        config = AutoConfig.for_model(
            model_type, d_model=32, n_heads=4, n_layers=1, max_seq_len=16, vocab_size=64
        )
        assert type(config) is MPTConfig and config.d_model == 32
        assert type(AutoModelForCausalLM.from_config(config)) is MPTForCausalLM
        assert type(AutoModel.from_config(config)) is MPTModel
    register_auto_classes()  # a second registration changes nothing
    assert type(AutoModelForCausalLM.from_config(tiny_config())) is MPTForCausalLM


def test_transformers_own_mpt_folder_keeps_its_function(tmp_path: Path) -> None:
    """A folder saved by transformers' MptForCausalLM loads as ours with the same outputs."""
    config = MptConfig(d_model=32, n_heads=4, n_layers=2, max_seq_len=64, vocab_size=128)
    torch.manual_seed(0)
    native = MptForCausalLM(config).eval()
    randomize(native, seed=2)
    native.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is MPTForCausalLM
    ids = random_ids(2, 16, seed=1)
    assert_close(_logits(loaded, ids), _logits(native, ids))
    kwargs: dict[str, Any] = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        assert torch.equal(generate(loaded, ids, **kwargs), generate(native, ids, **kwargs))


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    """A folder whose model_type only its own (failing) code implements."""
    config = {
        "model_type": "my_custom_lm",
        "architectures": ["CustomLM"],
        "auto_map": {
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomLM",
        },
        "hidden_size": 32,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in ("configuration_custom.py", "modeling_custom.py"):
        (tmp_path / name).write_text(SHIPPED_CODE)
    return tmp_path


def test_foreign_code_needs_the_flag_in_every_loader(foreign: Path) -> None:
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        AutoModelForCausalLM.from_pretrained(foreign, trust_remote_code=False)
    with pytest.raises(ConfigError, match=r"my_custom_lm.*set model\.trust_remote_code: true"):
        ComposerHFCausalLM(None, str(foreign))
    with pytest.raises(ConfigError, match=r"--name_or_path=.*add --trust_remote_code"):
        load_model_and_tokenizer(ModelSource(str(foreign)))
    with pytest.raises(ConfigError, match=r"pass --trust_remote_code"):
        check_model_generates(str(foreign), is_adapter=False, trust_remote_code=False)


def test_converter_check_runs_our_export_without_the_flag(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """The converter's upload check (``--test_uploaded_model``) no longer needs the flag for MPT."""
    model = tiny_model(tiny_config(vocab_size=512))  # learned positions: llmfoundry_mpt
    folder = save_mpt_as_hf(model, tokenizer, tmp_path / "export", "fp32")
    for name in ("configuration_mpt.py", "modeling_mpt.py"):
        (folder / name).write_text(SHIPPED_CODE)  # none of the bundled code may run
    prompt = "def f(x):"
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = generate(model, ids, max_new_tokens=6, do_sample=False, pad_token_id=1)
    text = check_model_generates(
        str(folder), is_adapter=False, trust_remote_code=False, prompt=prompt, max_new_tokens=6
    )
    assert text == tokenizer.decode(expected[0], skip_special_tokens=True)
