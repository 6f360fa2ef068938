"""Generate text from a Hugging Face model folder (or hub name): the logic of ``hf_generate.py``."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from llmfoundry.utils.tokenizer_utils import build_tokenizer

logger = logging.getLogger(__name__)

MODEL_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Generation:
    """One prompt and the text generated after it."""

    prompt: str
    continuation: str


def read_prompts(prompts: Sequence[str]) -> list[str]:
    """Expand ``file::path`` entries into the file's content; other entries are prompts as given.

    Raises:
        MissingFileError: for a ``file::`` path that does not exist.
    """
    expanded = []
    for prompt in prompts:
        if prompt.startswith("file::"):
            path = Path(prompt.removeprefix("file::"))
            if not path.is_file():
                raise MissingFileError(f"prompt file '{path}' does not exist")
            expanded.append(path.read_text(encoding="utf-8"))
        else:
            expanded.append(prompt)
    return expanded


def load_model_and_tokenizer(
    name_or_path: str,
    trust_remote_code: bool = False,
    model_dtype: str = "fp32",
    device: str = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer for generation (left padding for batches).

    Raises:
        ConfigError: on an unknown dtype.
        MissingFileError: if a local folder does not exist.
    """
    if model_dtype not in MODEL_DTYPES:
        raise ConfigError(f"--model_dtype={model_dtype!r}: choose one of {', '.join(MODEL_DTYPES)}")
    if name_or_path.startswith((".", "/")) and not Path(name_or_path).exists():
        raise MissingFileError(f"model folder '{name_or_path}' does not exist")
    tokenizer = build_tokenizer(name_or_path, {"trust_remote_code": trust_remote_code})
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, trust_remote_code=trust_remote_code, dtype=MODEL_DTYPES[model_dtype]
    )
    torch.nn.Module.to(model, torch.device(device))
    return model.eval(), tokenizer


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 100,
    **generate_kwargs: Any,
) -> list[Generation]:
    """Generate a continuation for each prompt (one left-padded batch).

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (``padding_side`` left).
        prompts: the prompts.
        max_new_tokens: tokens to generate per prompt.
        **generate_kwargs: passed to ``model.generate`` (``do_sample``, ``temperature``, ...).

    Returns:
        One ``Generation`` per prompt, in order.
    """
    encoded = tokenizer(list(prompts), return_tensors="pt", padding=True).to(model.device)
    start = time.perf_counter()
    output = cast(Any, model).generate(
        **encoded,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **generate_kwargs,
    )
    elapsed = time.perf_counter() - start
    new_tokens = output[:, encoded["input_ids"].shape[1] :]
    logger.info(
        "generated %d tokens for %d prompts in %.2fs (%.1f tokens/s)",
        new_tokens.numel(),
        len(prompts),
        elapsed,
        new_tokens.numel() / max(elapsed, 1e-9),
    )
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [Generation(prompt=p, continuation=t) for p, t in zip(prompts, texts, strict=True)]


def generate_from_pretrained(
    name_or_path: str,
    prompts: Sequence[str],
    max_new_tokens: int = 100,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    use_cache: bool = True,
    trust_remote_code: bool = False,
    model_dtype: str = "fp32",
    device: str = "cpu",
    seed: int = 42,
) -> list[Generation]:
    """Load a model by folder or hub name and generate for ``prompts`` (``file::path`` allowed).

    Sampling settings apply only with ``do_sample``; greedy decoding ignores them.

    Raises:
        ConfigError, MissingFileError, TokenizerError: on a bad dtype, path or tokenizer.
    """
    torch.manual_seed(seed)
    model, tokenizer = load_model_and_tokenizer(
        name_or_path, trust_remote_code, model_dtype, device
    )
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p} if do_sample else {}
    return generate(
        model,
        tokenizer,
        read_prompts(prompts),
        max_new_tokens,
        do_sample=do_sample,
        use_cache=use_cache,
        **sampling,
    )
