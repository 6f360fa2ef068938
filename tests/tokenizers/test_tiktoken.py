"""The ``tiktoken`` tokenizer: ids equal tiktoken's, round trips, special tokens, BOS/EOS,
padding, ChatML, and save/load, on a small encoding built here (nothing is downloaded)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict, Unpack

import pytest
import tiktoken
import tiktoken.registry
from transformers import AutoTokenizer

import llmfoundry  # noqa: F401  (registration)
from llmfoundry import registry
from llmfoundry.tokenizers import TiktokenTokenizerWrapper
from llmfoundry.tokenizers.tiktoken import DEFAULT_SYSTEM_PROMPT
from llmfoundry.utils.builders import build_tokenizer_from_section
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.tokenizer_utils import build_tokenizer

ENCODING = "llmfoundry_test_bpe"
# GPT-2's pre-tokenization pattern.
PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MERGES = [b"he", b"ll", b"llo", b"hello", b" w", b"or", b" wor", b"ld", b" world"]
HELLO, WORLD = 259, 264  # "hello" and " world"
ENDOFTEXT, PAD, IM_START, IM_END = 300, 301, 302, 303  # ids 265-299 are unused
SPECIAL = {
    "<|endoftext|>": ENDOFTEXT,
    "<|pad|>": PAD,
    "<|im_start|>": IM_START,
    "<|im_end|>": IM_END,
}
TEXT = "héllo wörld, ✓ 日本 hello world"


def make_encoding() -> tiktoken.Encoding:
    """A byte-level BPE: the 256 bytes, nine merges, and four special tokens."""
    ranks = {bytes([byte]): byte for byte in range(256)}
    ranks.update({merge: 256 + i for i, merge in enumerate(MERGES)})
    return tiktoken.Encoding(
        name=ENCODING, pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=SPECIAL
    )


@pytest.fixture(autouse=True)
def encoding(monkeypatch: pytest.MonkeyPatch) -> Iterator[tiktoken.Encoding]:
    """The test encoding, known to tiktoken by name and as gpt-4's (cl100k_base)."""
    built = make_encoding()
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, ENCODING, built)
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "cl100k_base", built)
    yield built


class _Options(TypedDict, total=False):
    """The wrapper's options these tests set."""

    add_bos_token: bool
    add_eos_token: bool
    use_default_system_prompt: bool
    pad_token: str
    model_max_length: int


def _wrapper(**kwargs: Unpack[_Options]) -> TiktokenTokenizerWrapper:
    return TiktokenTokenizerWrapper(encoding_name=ENCODING, **kwargs)


def test_registered_and_built_from_a_tokenizer_section() -> None:
    assert registry.tokenizers.get("tiktoken") is TiktokenTokenizerWrapper
    section = {"name": "tiktoken", "kwargs": {"encoding_name": ENCODING}}
    built = build_tokenizer_from_section(section)
    assert isinstance(built, TiktokenTokenizerWrapper)
    by_model = build_tokenizer("tiktoken", {"model_name": "gpt-4", "add_eos_token": True})
    assert isinstance(by_model, TiktokenTokenizerWrapper)
    assert by_model("hello world")["input_ids"] == [HELLO, WORLD, ENDOFTEXT]


def test_ids_are_tiktokens_and_text_round_trips(encoding: tiktoken.Encoding) -> None:
    tokenizer = _wrapper()
    ids = tokenizer(TEXT)["input_ids"]
    assert ids == encoding.encode(TEXT)
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer.tokenize("hello world") == ["hello", "Ġworld"]
    assert tokenizer.convert_tokens_to_ids(["hello", "Ġworld"]) == [HELLO, WORLD]
    # Unused ids decode to nothing; half of a UTF-8 character decodes as errors="replace".
    assert tokenizer.decode([HELLO, 280, WORLD]) == "hello world"
    assert tokenizer.decode([0xC3]) == "\ufffd"
    assert (tokenizer.vocab_size, len(tokenizer), len(tokenizer.get_vocab())) == (304, 304, 304)
    assert tokenizer.get_vocab()["<extra_id_0>"] == 265


def test_special_tokens_and_bos_eos() -> None:
    tokenizer = _wrapper()
    assert (tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id) == (300,) * 3
    assert tokenizer.pad_token is None
    ids = tokenizer("<|im_start|>user\nhi<|im_end|>")["input_ids"]
    assert ids == [IM_START, *b"user\nhi", IM_END]
    both = _wrapper(add_bos_token=True, add_eos_token=True)
    encoded = both("hello world", return_special_tokens_mask=True)
    assert encoded["input_ids"] == [ENDOFTEXT, HELLO, WORLD, ENDOFTEXT]
    assert encoded["special_tokens_mask"] == [1, 0, 0, 1]
    assert both.decode(encoded["input_ids"], skip_special_tokens=True) == "hello world"
    assert both("hello world", add_special_tokens=False)["input_ids"] == [HELLO, WORLD]


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_with_a_pad_token(side: str) -> None:
    tokenizer = _wrapper(pad_token="<|pad|>")
    tokenizer.padding_side = side
    batch = tokenizer(["hello world", "hello"], padding=True)
    short, mask = ([HELLO, PAD], [1, 0]) if side == "right" else ([PAD, HELLO], [0, 1])
    assert batch["input_ids"] == [[HELLO, WORLD], short]
    assert batch["attention_mask"] == [[1, 1], mask]
    with pytest.raises(ValueError, match="padding token"):
        _wrapper()(["hello world", "hello"], padding=True)


def test_chatml_template_with_and_without_the_default_system_prompt() -> None:
    user = [{"role": "user", "content": "hi"}]
    chat = _wrapper().apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    turns = [
        {"role": "system", "content": " Be brief. "},
        *user,
        {"role": "assistant", "content": "yo"},
    ]
    assert _wrapper().apply_chat_template(turns, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nyo<|im_end|>"
    )
    default = _wrapper(use_default_system_prompt=True).apply_chat_template(user, tokenize=False)
    assert default == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nhi<|im_end|>"
    )


def test_save_and_load_keep_the_encoding_and_options(tmp_path: Path) -> None:
    saved = _wrapper(add_bos_token=True, pad_token="<|pad|>", model_max_length=77)
    saved.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["encoding_name"] == ENCODING and config["model_name"] is None
    assert (config["add_bos_token"], config["add_eos_token"]) == (True, False)
    assert config["tokenizer_class"] == "TiktokenTokenizerWrapper"
    assert config["auto_map"]["AutoTokenizer"][0] == "tiktoken.TiktokenTokenizerWrapper"
    assert not (tmp_path / "vocab.json").exists()
    expected = saved(["hello world", "hello"], padding=True)["input_ids"]
    loaded = build_tokenizer(str(tmp_path))  # no remote code: the registered class loads it
    remote = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)
    for tokenizer in (loaded, remote, pickle.loads(pickle.dumps(saved))):
        assert type(tokenizer).__name__ == "TiktokenTokenizerWrapper"
        assert tokenizer(["hello world", "hello"], padding=True)["input_ids"] == expected
        assert tokenizer.model_max_length == 77
    assert isinstance(loaded, TiktokenTokenizerWrapper)


def test_bad_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="exactly one of model_name .* and encoding_name"):
        TiktokenTokenizerWrapper()
    with pytest.raises(ConfigError, match="exactly one of model_name"):
        TiktokenTokenizerWrapper(model_name="gpt-4", encoding_name=ENCODING)
    with pytest.raises(ConfigError, match="encoding_name='no_such_bpe' is not known to tiktoken"):
        TiktokenTokenizerWrapper(encoding_name="no_such_bpe")
    with pytest.raises(
        ConfigError,
        match="tokenizer.kwargs.encoding_nam is not a valid key; did you mean 'encoding_name'",
    ):
        build_tokenizer("tiktoken", {"encoding_nam": ENCODING})
