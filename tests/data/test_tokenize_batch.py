"""The converters' batch tokenization calls the Rust tokenizer directly when that gives the same
ids as the tokenizer's own call, and goes through the call otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from llmfoundry.data.token_batches import batch_encoder, tokenize_batch

TEXTS = [
    "def f(x):\n    return x + 1\n",
    "",
    "special <|endoftext|> in the middle, then unicode: naïve café 東京",
    "a" * 3000,  # longer than model_max_length: never truncated
]


def _ids_of_the_call(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    encoded = tokenizer(texts, truncation=False, padding=False, verbose=False)
    return [list(ids) for ids in encoded["input_ids"]]


def _with_bos(tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    eos = tokenizer.eos_token
    assert isinstance(eos, str)
    eos_id = tokenizer.convert_tokens_to_ids(eos)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{eos} $A", special_tokens=[(eos, eos_id)]
    )
    return tokenizer


@pytest.mark.parametrize("kind", ["plain", "adds a special token", "splits special tokens"])
def test_the_ids_are_the_tokenizer_calls(tokenizer_dir: Path, kind: str) -> None:
    if kind == "adds a special token":
        tokenizer = _with_bos(tokenizer_dir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_dir, split_special_tokens=kind == "splits special tokens"
        )
    expected = _ids_of_the_call(tokenizer, TEXTS)
    for _ in range(2):  # before and after the wrapper's own call has set the Rust tokenizer up
        assert [ids.tolist() for ids in tokenize_batch(tokenizer, TEXTS)] == expected
        assert [ids.tolist() for ids in batch_encoder(tokenizer)(TEXTS)] == expected
        _ids_of_the_call(tokenizer, TEXTS)
    if kind == "splits special tokens":
        special = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        assert special not in expected[2]
    if kind == "adds a special token":
        assert all(ids[0] == tokenizer.eos_token_id for ids in expected)


def test_truncation_left_on_the_rust_tokenizer_does_not_cut_documents(tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    expected = _ids_of_the_call(tokenizer, TEXTS)
    tokenizer.backend_tokenizer.enable_truncation(max_length=8)
    got = [ids.tolist() for ids in tokenize_batch(tokenizer, TEXTS)]
    assert got == expected
    assert len(got[3]) > 8
