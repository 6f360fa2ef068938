"""ComposerHFCausalLM (``hf_causal_lm``): loading local HF folders, config overrides, LoRA, errors.

Every model is built and saved locally (no Hub access): a tiny MPT exported with its remote
code, and a tiny Llama saved with ``save_pretrained``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from composer.loggers import InMemoryLogger
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from llmfoundry.command_utils.convert_composer_to_hf import save_mpt_as_hf
from llmfoundry.models.hf import ComposerHFCausalLM
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.utils.builders import build_composer_model_from_section
from llmfoundry.utils.exceptions import (
    ConfigError,
    MissingDependencyError,
    MissingFileError,
    UserError,
)
from tests.fixtures import (
    VOCAB,
    cpu_trainer,
    hf_logits,
    lora_llama,
    save_llama,
    text_batches,
    text_ids,
    tiny_config,
    tiny_model,
    trainable_adamw,
)

LORA_WQKV = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "target_modules": ["Wqkv"],
}


def _ids(seed: int = 0) -> torch.Tensor:
    return text_ids(2, 16, seed)


def _embedding_weight(model: Any) -> torch.Tensor:
    return model.get_input_embeddings().weight


def _save_mpt(folder: Path, **config: Any) -> MPTForCausalLM:
    model = tiny_model(tiny_config(vocab_size=VOCAB, **config))
    save_mpt_as_hf(model, None, folder, "fp32")
    return model


@pytest.fixture(scope="module")
def mpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MPTForCausalLM]:
    """A tiny MPT exported with its code, and the model it was saved from."""
    folder = tmp_path_factory.mktemp("mpt") / "model"
    return folder, _save_mpt(folder)


def test_remote_code_mpt_loads_with_the_same_logits_and_loss(
    mpt: tuple[Path, MPTForCausalLM], tokenizer: PreTrainedTokenizerBase
) -> None:
    folder, original = mpt
    model = ComposerHFCausalLM(tokenizer, str(folder), trust_remote_code=True)
    ids = _ids()
    torch.testing.assert_close(hf_logits(model.model, ids), hf_logits(original, ids))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.model.config.pad_token_id == tokenizer.pad_token_id == 1

    labels = ids.clone()
    labels[0, -5:] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        loss = model.loss(model(batch), batch)
    logits = hf_logits(original, ids)[:, :-1]
    targets = labels[:, 1:]
    keep = targets != -100
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[keep], targets[keep]))
    # 6 x params x tokens, plus attention: 12 x layers x width x seq^2 per sequence.
    config = original.config
    attention = 12 * config.n_layers * config.d_model * ids.shape[1] ** 2 * ids.shape[0]
    assert model.flops_per_batch(batch) == 6 * model.n_params * ids.numel() + attention

    with torch.no_grad():
        eval_logits = model.eval_forward(batch)
    metric = model.get_metrics(is_train=False)["LanguageCrossEntropy"]
    model.update_metric(batch, eval_logits, metric)
    torch.testing.assert_close(metric.compute(), loss)
    assert torch.equal(batch["labels"], labels), "the batch is not modified in place"


def test_mpt_folders_load_as_our_class_without_trust_remote_code(
    mpt: tuple[Path, MPTForCausalLM], tmp_path: Path
) -> None:
    # Our MPT is registered for model_type mpt/llmfoundry_mpt: no shipped code runs, and
    # transformers' own MptForCausalLM (ALiBi only) never stands in for it.
    folder, original = mpt
    gqa = tmp_path / "gqa"
    gqa_model = _save_mpt(
        gqa, attn_config={"attn_type": "grouped_query_attention", "kv_n_heads": 2}
    )
    native = tmp_path / "native"  # a config transformers' own MPT could also run
    native_model = _save_mpt(
        native, no_bias=True, learned_pos_emb=False, expansion_ratio=4, attn_config={"alibi": True}
    )
    ids = _ids()
    for path, reference in ((folder, original), (gqa, gqa_model), (native, native_model)):
        model = ComposerHFCausalLM(None, str(path))
        assert type(model.model) is MPTForCausalLM
        torch.testing.assert_close(hf_logits(model.model, ids), hf_logits(reference, ids))


def test_foreign_shipped_code_without_trust_remote_code_is_a_config_error(
    mpt: tuple[Path, MPTForCausalLM], tmp_path: Path
) -> None:
    folder, _ = mpt
    custom = tmp_path / "custom"  # a model_type neither transformers nor llmfoundry knows
    shutil.copytree(folder, custom)
    config = json.loads((custom / "config.json").read_text())
    config["model_type"] = "my_own_mpt"
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ConfigError, match=r"needs its own model code.*model\.trust_remote_code: true"
    ):
        ComposerHFCausalLM(None, str(custom))


def test_mpt_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    # Biases the config says are absent (no_bias: true) would be dropped silently on load.
    folder = tmp_path / "biased"
    _save_mpt(folder, no_bias=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "no_bias": True}))
    with pytest.raises(ConfigError, match=r"do not fit llmfoundry's MPTForCausalLM.*bias"):
        ComposerHFCausalLM(None, str(folder))


def _with_foreign_auto_map(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomLlama"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_builtin_class_stands_in_for_untrusted_code_only_if_weights_match(
    llama_dir: Path, tmp_path: Path
) -> None:
    # A llama folder that ships its own code: without trust, transformers' LlamaForCausalLM is
    # used when it takes every weight; a weight it has no place for is an error, not a drop.
    fitting = _with_foreign_auto_map(llama_dir, tmp_path / "fitting")
    model = ComposerHFCausalLM(None, str(fitting))
    assert type(model.model) is LlamaForCausalLM
    reference = LlamaForCausalLM.from_pretrained(llama_dir)
    ids = _ids()
    torch.testing.assert_close(hf_logits(model.model, ids), hf_logits(reference, ids))
    extra = _with_foreign_auto_map(llama_dir, tmp_path / "extra")
    weights = load_file(extra / "model.safetensors")
    save_file({**weights, "model.custom_gate.weight": torch.ones(4)}, extra / "model.safetensors")
    with pytest.raises(
        ConfigError, match=r"unmatched weights.*custom_gate.*trust_remote_code: true"
    ):
        ComposerHFCausalLM(None, str(extra))


def test_config_overrides_merge_into_nested_dicts(tmp_path: Path) -> None:
    # Saved for FlashAttention (MPT's default attn_impl); the override switches it to torch.
    folder = tmp_path / "mpt_flash"
    original = _save_mpt(folder, learned_pos_emb=False, attn_config={"attn_impl": "flash"})
    model = ComposerHFCausalLM(
        None,
        str(folder),
        trust_remote_code=True,
        config_overrides={"max_seq_len": 32, "attn_config": {"attn_impl": "torch"}},
    )
    config = model.model.config
    assert config.max_seq_len == 32
    assert config.attn_config["attn_impl"] == "torch"
    assert config.attn_config["rope_hf_config"] == {"type": "no_scaling", "factor": 1.0}
    ids = _ids()
    torch.testing.assert_close(
        hf_logits(model.model, ids), hf_logits(original, ids), atol=2e-5, rtol=1e-5
    )


def test_config_override_that_reshapes_weights_is_a_config_error(
    mpt: tuple[Path, MPTForCausalLM],
) -> None:
    folder, _ = mpt  # learned position embeddings: max_seq_len sets their shape
    with pytest.raises(ConfigError, match=r"weights do not fit .*model\.config_overrides"):
        ComposerHFCausalLM(
            None, str(folder), trust_remote_code=True, config_overrides={"max_seq_len": 32}
        )


def test_config_override_reaches_a_nested_dict_two_levels_down(
    mpt: tuple[Path, MPTForCausalLM],
) -> None:
    folder, _ = mpt
    model = ComposerHFCausalLM(
        None,
        str(folder),
        trust_remote_code=True,
        config_overrides={"attn_config": {"rope_hf_config": {"factor": 2.0}}},
    )
    assert model.model.config.attn_config["rope_hf_config"] == {"type": "no_scaling", "factor": 2.0}
    assert model.model.config.attn_config["attn_impl"] == "torch"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_layer": 3}, r"model\.config_overrides\.n_layer: .*did you mean 'n_layers'"),
        (
            {"attn_config": {"attn_imp": "torch"}},
            r"model\.config_overrides\.attn_config\.attn_imp is not a key .*did you mean 'attn_impl'",
        ),
    ],
)
def test_unknown_config_override_keys_are_named(
    mpt: tuple[Path, MPTForCausalLM], overrides: dict[str, Any], message: str
) -> None:
    folder, _ = mpt
    with pytest.raises(ConfigError, match=message):
        ComposerHFCausalLM(None, str(folder), trust_remote_code=True, config_overrides=overrides)


def test_config_override_of_the_wrong_type_is_named(llama_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.config_overrides\.num_hidden_layers='two'"):
        ComposerHFCausalLM(None, str(llama_dir), config_overrides={"num_hidden_layers": "two"})


def test_lora_on_llama_trains_only_the_adapter(
    llama_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    model = lora_llama(tokenizer, llama_dir)
    assert isinstance(model.model, peft.PeftModel)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    # 2 layers x (q_proj, v_proj) x (lora_A, lora_B)
    assert len(trainable) == 8
    assert all("lora_" in name and ("q_proj" in name or "v_proj" in name) for name in trainable)
    base: Any = model.model.base_model.model
    assert base.config._attn_implementation == "eager"
    # checkpoints hold only the adapter (should_save_peft_only defaults to True)
    assert set(model.state_dict()) == {f"{name}" for name in trainable}


def test_lora_finetune_of_mpt_wqkv_trains_and_saves_a_peft_adapter(
    mpt: tuple[Path, MPTForCausalLM], tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    folder, _ = mpt
    model = ComposerHFCausalLM(
        tokenizer, str(folder), trust_remote_code=True, peft_config=LORA_WQKV
    )
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    assert lora_before and all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)

    in_memory = InMemoryLogger()
    trainer = cpu_trainer(
        model,
        train_dataloader=text_batches(1),
        max_duration="15ba",
        optimizers=trainable_adamw(model, lr=1e-2),
        loggers=[in_memory],
    )
    trainer.fit()
    losses = [float(value) for _, value in in_memory.data["loss/train/total"]]
    assert len(losses) == 15
    assert losses[-1] < 0.8 * losses[0], losses

    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], before) for n, before in frozen_before.items())
    assert all(not torch.equal(params[n], before) for n, before in lora_before.items())

    adapter_dir = tmp_path / "adapter"
    model.model.save_pretrained(str(adapter_dir))
    assert (adapter_dir / "adapter_config.json").is_file()
    assert (adapter_dir / "adapter_model.safetensors").is_file()

    ids = _ids(seed=2)
    trained_logits = hf_logits(model.model, ids)
    base = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    reloaded = peft.PeftModel.from_pretrained(base, adapter_dir)
    torch.testing.assert_close(hf_logits(reloaded, ids), trained_logits)

    resumed = ComposerHFCausalLM(
        tokenizer, str(folder), trust_remote_code=True, pretrained_lora_id_or_path=str(adapter_dir)
    )
    torch.testing.assert_close(hf_logits(resumed.model, ids), trained_logits)
    assert any(p.requires_grad for n, p in resumed.named_parameters() if "lora_" in n)


def test_missing_optional_dependencies_name_the_fix(llama_dir: Path) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(MissingDependencyError, match=r"model\.load_in_8bit.*bitsandbytes"):
            ComposerHFCausalLM(None, str(llama_dir), load_in_8bit=True)
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(
            MissingDependencyError, match=r"model\.use_flash_attention_2.*flash-attn.*'gpu' extra"
        ):
            ComposerHFCausalLM(None, str(llama_dir), use_flash_attention_2=True)


def test_bad_options_fail_naming_the_key(llama_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"model\.peft_config\.lora_alpah .*did you mean 'lora_alpha'"
    ):
        ComposerHFCausalLM(
            None, str(llama_dir), peft_config={"peft_type": "LORA", "lora_alpah": 16}
        )
    with pytest.raises(ConfigError, match=r"model\.peft_config\.peft_type='PREFIX_TUNING'"):
        ComposerHFCausalLM(None, str(llama_dir), peft_config={"peft_type": "PREFIX_TUNING"})
    with pytest.raises(ConfigError, match=r"model\.peft_config\.target_modules=\['Wqkv'\]"):
        ComposerHFCausalLM(None, str(llama_dir), peft_config=LORA_WQKV)
    with pytest.raises(
        ConfigError, match=r"^model\.peft_config\.r must be a positive int, got int 0$"
    ):
        ComposerHFCausalLM(None, str(llama_dir), peft_config={"peft_type": "LORA", "r": 0})
    with pytest.raises(ConfigError, match=r"^model\.peft_config\.bias must be one of 'none'"):
        ComposerHFCausalLM(None, str(llama_dir), peft_config={"peft_type": "LORA", "bias": "x"})
    with pytest.raises(
        ConfigError, match=r"model\.attn_implementation='spda'.*did you mean 'sdpa'"
    ):
        ComposerHFCausalLM(None, str(llama_dir), attn_implementation="spda")
    gpu: Any = "gpu"  # what a YAML could hold; the signature's Literal does not allow it
    with pytest.raises(ConfigError, match=r"model\.init_device='gpu'"):
        ComposerHFCausalLM(None, str(llama_dir), init_device=gpu)
    with pytest.raises(
        MissingFileError, match=r"model\.pretrained_model_name_or_path=.*no such folder"
    ):
        ComposerHFCausalLM(None, str(tmp_path / "nowhere"))
    with pytest.raises(
        MissingFileError, match=r"model\.pretrained_model_name_or_path=.*no config\.json"
    ):
        ComposerHFCausalLM(None, str(tmp_path))
    with pytest.raises(
        MissingFileError, match=r"model\.pretrained_lora_id_or_path=.*no such folder"
    ):
        ComposerHFCausalLM(None, str(llama_dir), pretrained_lora_id_or_path=str(tmp_path / "none"))


def test_a_larger_tokenizer_needs_allow_embedding_resizing(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    folder = save_llama(tmp_path / "small_vocab", num_hidden_layers=1, vocab_size=VOCAB - 12)
    with pytest.raises(ConfigError, match=r"model\.allow_embedding_resizing: true"):
        ComposerHFCausalLM(tokenizer, str(folder))
    model = ComposerHFCausalLM(tokenizer, str(folder), allow_embedding_resizing=True)
    assert _embedding_weight(model.model).shape[0] == len(tokenizer)


@pytest.mark.parametrize("init_device", ["cpu", "meta"])
def test_registry_builds_a_fresh_model_from_the_config(
    llama_dir: Path, tokenizer: PreTrainedTokenizerBase, init_device: str
) -> None:
    section = {
        "name": "hf_causal_lm",
        "pretrained_model_name_or_path": str(llama_dir),
        "pretrained": False,
        "init_device": init_device,
        "config_overrides": {"num_hidden_layers": 1},
    }
    model = build_composer_model_from_section(section, tokenizer)
    assert isinstance(model, ComposerHFCausalLM)
    assert model.model.config.num_hidden_layers == 1
    saved = LlamaForCausalLM.from_pretrained(llama_dir)
    fresh_embedding = _embedding_weight(model.model)
    assert fresh_embedding.device.type == "cpu"
    assert torch.isfinite(fresh_embedding).all()
    assert not torch.equal(fresh_embedding, _embedding_weight(saved))
    with pytest.raises(
        ConfigError, match=r"model\.pretrained_model_name_or_pth is not a valid key"
    ):
        build_composer_model_from_section(
            {**section, "pretrained_model_name_or_pth": "x"}, tokenizer
        )


@pytest.mark.parametrize("damage", ["no weights", "cut weights"])
@pytest.mark.parametrize(
    ("name", "model_dir"), [("hf_causal_lm", "llama_dir"), ("hf_t5", "t5_dir")]
)
def test_a_folder_with_missing_or_cut_weights_is_named_in_one_line(
    request: pytest.FixtureRequest, tmp_path: Path, damage: str, name: str, model_dir: str
) -> None:
    # hf_t5 loads through the same checks: one line instead of safetensors' traceback.
    folder = tmp_path / "model"
    shutil.copytree(request.getfixturevalue(model_dir), folder)
    weights = folder / "model.safetensors"
    if damage == "no weights":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:1000])
    section = {"name": name, "pretrained_model_name_or_path": str(folder)}
    with pytest.raises(UserError) as raised:
        build_composer_model_from_section(section, None)
    message = str(raised.value)
    assert "\n" not in message and "model.pretrained_model_name_or_path" in message
    assert (
        "has a config.json but no weights" if damage == "no weights" else "truncated"
    ) in message
