"""Tokenizing prompt/response and chat examples into turns, and the errors bad rows give."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning import tokenize_example
from llmfoundry.utils.exceptions import DatasetError
from tests.fixtures import CHAT_TEMPLATE

EOS = 0
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "def f(x):"},
    {"role": "assistant", "content": "return x"},
    {"role": "user", "content": "import json"},
    {"role": "assistant", "content": "json.dumps(value)"},
]


@pytest.fixture
def chat_tokenizer(tokenizer: PreTrainedTokenizerBase) -> Iterator[PreTrainedTokenizerBase]:
    original = tokenizer.chat_template
    tokenizer.chat_template = CHAT_TEMPLATE
    yield tokenizer
    tokenizer.chat_template = original


def ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_prompt_response_is_one_turn(tokenizer: PreTrainedTokenizerBase) -> None:
    example = {"prompt": "def decode(self, s):", "response": " return s"}
    turns = tokenize_example(example, tokenizer, "row 0")["turns"]
    # As LLM Foundry 0.22 tokenizes it: this tokenizer adds no special tokens, and the
    # response's EOS comes from the collator.
    assert turns == [
        {
            "input_ids": list(tokenizer("def decode(self, s):")["input_ids"]),
            "labels": ids(tokenizer, " return s"),
        }
    ]


def test_a_bos_the_tokenizer_adds_starts_only_the_prompt(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    with_bos = copy.deepcopy(tokenizer)
    backend: Any = with_bos.backend_tokenizer
    backend.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", EOS)]
    )
    with_bos.bos_token = "<|endoftext|>"
    turns = tokenize_example({"prompt": "a", "response": "b"}, with_bos, "row 0")["turns"]
    assert turns == [{"input_ids": [EOS, *ids(tokenizer, "a")], "labels": ids(tokenizer, "b")}]


def test_completion_is_accepted_as_the_response(tokenizer: PreTrainedTokenizerBase) -> None:
    turns = tokenize_example({"prompt": "a", "completion": "b"}, tokenizer, "row 0")["turns"]
    assert turns[0]["labels"] == ids(tokenizer, "b")


def test_chat_splits_into_one_turn_per_assistant_message(
    chat_tokenizer: PreTrainedTokenizerBase,
) -> None:
    turns = tokenize_example({"messages": CHAT}, chat_tokenizer, "row 0")["turns"]
    tok = chat_tokenizer
    assert turns == [
        {
            "input_ids": ids(
                tok,
                "<|system|>Be brief.<|endoftext|><|user|>def f(x):<|endoftext|><|assistant|>",
            ),
            "labels": ids(tok, "return x<|endoftext|>"),
        },
        {
            "input_ids": ids(tok, "<|user|>import json<|endoftext|><|assistant|>"),
            "labels": ids(tok, "json.dumps(value)<|endoftext|>"),
        },
    ]
    assert turns[0]["labels"][-1] == EOS  # the template's end-of-turn belongs to the response
    # Together the turns are exactly the templated conversation.
    whole = [t for turn in turns for t in turn["input_ids"] + turn["labels"]]
    text = tok.apply_chat_template(CHAT, tokenize=False)
    assert isinstance(text, str)
    assert whole == ids(tok, text)


def test_a_template_that_rewrites_earlier_text_is_rejected(
    chat_tokenizer: PreTrainedTokenizerBase,
) -> None:
    chat_tokenizer.chat_template = (
        CHAT_TEMPLATE + "{% if not add_generation_prompt %}END{% endif %}"
    )
    with pytest.raises(DatasetError, match=r"row 7: the chat template does not render message 2"):
        tokenize_example({"messages": CHAT}, chat_tokenizer, "row 7")


@pytest.mark.parametrize(
    ("example", "pattern"),
    [
        ({"response": "x"}, r"f\.jsonl', row 3: no 'prompt' field \(fields: response\)"),
        ({"prompt": "x"}, r"f\.jsonl', row 3: no 'response' field"),
        (
            {"prompt": 5, "response": "x"},
            r"f\.jsonl', row 3: field 'prompt' must be a string, got int",
        ),
        ({"prompt": "x", "response": ["y"]}, r"field 'response' must be a string, got list"),
        ({"prompt": "x", "response": ""}, r"row 3: field 'response' is empty"),
        ({"messages": []}, r"field 'messages' must be a non-empty list"),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            r"the last message must be the assistant's",
        ),
        ({"messages": [{"role": "bot", "content": "hi"}]}, r"messages\[0\]\.role 'bot'"),
        (
            {"messages": [{"role": "assistant", "content": 3}]},
            r"messages\[0\]\.content must be a string",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
            r"messages\[1\]\.content is empty",
        ),
    ],
)
def test_bad_rows_name_the_source_row_and_field(
    chat_tokenizer: PreTrainedTokenizerBase, example: dict[str, Any], pattern: str
) -> None:
    with pytest.raises(DatasetError, match=pattern):
        tokenize_example(example, chat_tokenizer, "'f.jsonl', row 3")


def test_chat_without_a_template_is_an_error(tokenizer: PreTrainedTokenizerBase) -> None:
    assert tokenizer.chat_template is None
    with pytest.raises(DatasetError, match="the tokenizer has no chat template"):
        tokenize_example({"messages": CHAT}, tokenizer, "row 0")
