"""Tiny models and model folders for the tests: Llama configs and folders saved with
``save_pretrained``, an MPT export with its code, and peft LoRA adapters, sized for the fixture
tokenizer (vocab 512); and scripts run in this process."""

from __future__ import annotations

import contextlib
import io
import logging
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import peft
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from llmfoundry.models.hf.export import save_mpt_as_hf
from tests.models.mpt_helpers import tiny_config, tiny_model

VOCAB = 512  # the tokenizer fixture's size


def tiny_llama_config(**overrides: Any) -> LlamaConfig:
    """A 2-layer, hidden 32 grouped-query Llama config (vocab 512, 64 positions); ``overrides``
    replace any field."""
    fields: dict[str, Any] = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 64,
    }
    fields.update(overrides)
    return LlamaConfig(**fields)


def tiny_llama(
    tokenizer: PreTrainedTokenizerBase | None = None, seed: int = 0, **overrides: Any
) -> LlamaForCausalLM:
    """A freshly initialized (seeded) Llama of ``tiny_llama_config(**overrides)``; with a
    tokenizer, its EOS and pad ids are the tokenizer's."""
    if tokenizer is not None:
        overrides.setdefault("eos_token_id", cast(int, tokenizer.eos_token_id))
        overrides.setdefault("pad_token_id", cast(int, tokenizer.pad_token_id))
    config = tiny_llama_config(**overrides)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_llama(
    folder: Path, tokenizer: PreTrainedTokenizerBase | None = None, seed: int = 0, **overrides: Any
) -> Path:
    """``tiny_llama(tokenizer, seed, **overrides)`` saved with ``save_pretrained``, plus the
    tokenizer when one is given."""
    tiny_llama(tokenizer, seed, **overrides).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def save_tiny_llama(
    folder: Path,
    tokenizer: PreTrainedTokenizerBase,
    hidden: int = 32,
    max_positions: int = 64,
    seed: int = 0,
) -> Path:
    """A 2-layer Llama (GQA) with randomized weights, plus the tokenizer."""
    model = tiny_llama(
        tokenizer,
        seed,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        max_position_embeddings=max_positions,
        bos_token_id=None,
    )
    with torch.no_grad():  # fresh init is near-uniform; larger weights make greedy text varied
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_mpt(folder: Path, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A 2-layer MPT (d_model 32, 64 positions) exported with its code and the tokenizer."""
    return save_mpt_as_hf(tiny_model(tiny_config(vocab_size=VOCAB)), tokenizer, folder, "fp32")


def save_lora_adapter(
    base: LlamaForCausalLM | torch.nn.Module,
    folder: Path,
    target_modules: list[str],
    seed: int = 1,
) -> Path:
    """A LoRA adapter (r 4) on ``base`` with random A and B, so that it changes the outputs."""
    torch.manual_seed(seed)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=target_modules, init_lora_weights=False
    )
    peft.get_peft_model(base, config).save_pretrained(str(folder))
    return folder


@dataclass
class ScriptResult:
    """Exit code and output of a script run in this process."""

    returncode: int
    stdout: str
    stderr: str


def run_script(path: Path, *args: str, stdin: str | None = None) -> ScriptResult:
    """Run a script as ``__main__`` in this process (a fresh interpreter would spend most of a
    test importing llmfoundry), with ``sys.argv``, stdin, stdout and stderr replaced."""
    stdout, stderr = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    argv, real_stdin = sys.argv, sys.stdin
    sys.argv = [str(path), *args]
    sys.stdin = io.StringIO(stdin or "")
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as done:
                code = done.code
    finally:
        sys.argv, sys.stdin = argv, real_stdin
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
    return ScriptResult(int(code or 0), stdout.getvalue(), stderr.getvalue())
