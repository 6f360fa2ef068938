"""Composer start-up shortcuts: our causal-LM check (by class name, no imports) answers what
Composer's (by importing every causal-LM class) answers, building the Composer MPT wrapper imports
no other model family, and a Trainer's environment report names the CPU without a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import transformers
from composer.models.huggingface import _is_registered_causal_lm
from peft import LoraConfig, get_peft_model

from llmfoundry.utils.composer_shortcuts import is_registered_causal_lm
from tests.fixtures import tiny_config, tiny_model

GPT2 = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=32)


class ShopLM(transformers.GPT2LMHeadModel):
    """A user's subclass of a registered causal LM."""


def _models() -> dict[str, transformers.PreTrainedModel]:
    t5 = transformers.T5Config(
        d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8, vocab_size=64
    )
    bert = transformers.BertConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=64,
    )
    mpt = transformers.MptConfig(d_model=16, n_heads=2, n_layers=1, vocab_size=64, max_seq_len=32)
    return {
        "our MPT": tiny_model(tiny_config()),
        "transformers MPT": transformers.MptForCausalLM(mpt),
        "GPT-2 LM": transformers.GPT2LMHeadModel(GPT2),
        "a subclass": ShopLM(GPT2),
        "GPT-2 body": transformers.GPT2Model(GPT2),
        "T5": transformers.T5ForConditionalGeneration(t5),
        "BERT MLM": transformers.BertForMaskedLM(bert),
    }


EXPECTED = {
    "our MPT": True,
    "transformers MPT": True,
    "GPT-2 LM": True,
    "a subclass": True,
    "GPT-2 body": False,
    "T5": False,
    "BERT MLM": False,
}


def test_the_check_agrees_with_composers() -> None:
    import llmfoundry.models.hf  # noqa: F401  (registers our MPT with the Auto classes)

    models = _models()
    ours = {name: is_registered_causal_lm(model) for name, model in models.items()}
    composers = {name: _is_registered_causal_lm(model) for name, model in models.items()}
    assert ours == composers == EXPECTED


def test_a_peft_wrapped_model_is_judged_by_the_model_inside() -> None:
    config = LoraConfig(r=2, target_modules=["c_attn"], task_type="CAUSAL_LM")
    wrapped = get_peft_model(transformers.GPT2LMHeadModel(GPT2), config)
    assert is_registered_causal_lm(wrapped) is True
    assert is_registered_causal_lm(wrapped) == _is_registered_causal_lm(wrapped)


@pytest.mark.slow
def test_building_the_composer_mpt_imports_no_other_model_family() -> None:
    code = textwrap.dedent("""
        import json, sys
        from llmfoundry.models.hf import ComposerMPTCausalLM
        model = ComposerMPTCausalLM(d_model=16, n_heads=2, n_layers=1, max_seq_len=32, vocab_size=64)
        assert model.shift_labels is True
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("transformers.models.")
                                and m.count(".") == 2)))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    families = set(json.loads(result.stdout.strip().splitlines()[-1]))
    # Before: all ~190 causal-LM families were imported to answer one isinstance question.
    assert len(families) < 10, sorted(families)


def test_a_trainer_env_report_names_the_cpu_without_a_subprocess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess

    import composer.utils.collect_env as composer_env

    from llmfoundry.utils.composer_shortcuts import cpu_model_name, trainer_env_without_cpu_probe

    original = composer_env.get_cpu_model

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("py-cpuinfo's subprocess was started")

    monkeypatch.setattr(subprocess.Popen, "__init__", no_subprocess)
    with trainer_env_without_cpu_probe():
        report = composer_env.get_composer_env_dict()
    assert report["cpu_model"] == cpu_model_name() != ""
    assert report["composer_version"] == composer_env.get_composer_version()
    assert composer_env.get_cpu_model is original
