"""``hf_t5``: encoder-decoder finetuning batches, the ComposerHFT5 wrapper, and LLM Foundry's
t5-small Dolly YAML training a tiny T5 built here (nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase, T5ForConditionalGeneration

from llmfoundry import registry
from llmfoundry.data.finetuning import build_finetuning_dataloader
from llmfoundry.models.hf.hf_t5 import ComposerHFT5
from llmfoundry.utils.exceptions import ConfigError
from tests import REPO
from tests.command_utils.conftest import train_in_memory

EOS, PAD, X = 0, 1, -100
YAML = REPO / "scripts/train/yamls/finetune/t5-small_dolly_sft.yaml"
ROWS = [{"prompt": f"def add_{i}(a, b):", "response": f" return a + b + {i}"} for i in range(8)]


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


def encoder_decoder_batch(
    tokenizer: PreTrainedTokenizerBase, jsonl: Path, max_seq_len: int = 16
) -> dict[str, torch.Tensor]:
    dataset = {
        "hf_name": "json",
        "hf_kwargs": {"data_files": {"train": str(jsonl)}, "cache_dir": str(jsonl.parent / "hf")},
        "split": "train",
        "max_seq_len": max_seq_len,
        "decoder_only_format": False,
        "shuffle": False,
    }
    return next(iter(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader))


def test_targets_and_decoder_inputs_of_a_hand_made_example(
    tokenizer: PreTrainedTokenizerBase, jsonl: Path, t5_dir: Path
) -> None:
    batch = encoder_decoder_batch(tokenizer, jsonl)
    prompt = list(tokenizer(ROWS[0]["prompt"])["input_ids"])
    target = [*tokenizer(ROWS[0]["response"])["input_ids"], EOS]
    assert batch["input_ids"][0].tolist() == prompt + [PAD] * (16 - len(prompt))
    assert batch["attention_mask"][0].tolist() == [1] * len(prompt) + [0] * (16 - len(prompt))
    assert batch["labels"][0].tolist() == target + [X] * (16 - len(target))
    assert batch["decoder_input_ids"][0].tolist() == [PAD, *target] + [PAD] * (15 - len(target))
    assert batch["decoder_attention_mask"][0].tolist() == [1] * len(target) + [0] * (
        16 - len(target)
    )
    # Exactly the decoder inputs T5 makes from the labels itself.
    model = T5ForConditionalGeneration.from_pretrained(t5_dir)
    assert torch.equal(batch["decoder_input_ids"], model._shift_right(batch["labels"]))


# The first Hugging Face model a process wraps makes Composer import every transformers causal-LM
# module (~10 s on 2 CPU cores); later ones take well under a second.
@pytest.mark.slow
def test_the_wrapper_is_registered_and_its_loss_is_the_targets_cross_entropy(
    tokenizer: PreTrainedTokenizerBase, jsonl: Path, t5_dir: Path
) -> None:
    assert registry.models.get("hf_t5") is ComposerHFT5
    model = ComposerHFT5(tokenizer, str(t5_dir))
    batch = encoder_decoder_batch(tokenizer, jsonl)
    outputs = model(batch)
    logits = outputs.logits
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=X
    )
    assert torch.allclose(model.loss(outputs, batch), expected)
    # Position by position, no shift: eval hands the metrics the labels as they are.
    assert model.eval_forward(batch, outputs) is logits
    assert model.labels is batch["labels"]


def test_a_decoder_only_model_is_refused(
    llama_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    with pytest.raises(ConfigError, match=r"is not an encoder-decoder model .*use hf_causal_lm"):
        ComposerHFT5(tokenizer, str(llama_dir))


@pytest.mark.slow  # a Composer Trainer run: ~10 s on 2 CPU cores
def test_the_t5_yaml_trains_a_tiny_t5_for_two_batches(t5_dir: Path, jsonl: Path) -> None:
    from llmfoundry.utils.config_utils import TrainConfig, load_config

    overrides = [
        f"variables.model_name={t5_dir}",
        "variables.max_seq_len=32",
        "train_loader.dataset.hf_name=json",
        f"train_loader.dataset.hf_kwargs.data_files.train={jsonl}",
        "train_loader.num_workers=0",
        "max_duration=2ba",
        "global_train_batch_size=4",
        "device_train_microbatch_size=2",
        "optimizer.lr=1.0e-2",
    ]
    cfg, resolved = load_config(YAML, overrides, TrainConfig)
    assert cfg.model["name"] == "hf_t5"
    assert cfg.train_loader["dataset"]["decoder_only_format"] is False
    before = {
        name: param.detach().clone()
        for name, param in T5ForConditionalGeneration.from_pretrained(t5_dir).named_parameters()
    }
    trainer, _, _ = train_in_memory(cfg, resolved, batches=2)
    model: Any = trainer.state.model
    after = dict(model.model.named_parameters())
    changed = [name for name, value in before.items() if not torch.equal(value, after[name].cpu())]
    assert len(changed) == len(before)  # every weight trained
