"""convert_finetuning_dataset in LLM Foundry 0.22's layout: ``turns`` (json) when tokenizing,
text columns without a tokenizer, and the ``--target_*``/``--encoder_decoder`` flags; the
finetuning loader reads each back, giving the final response its EOS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.data_prep.convert_finetuning_dataset import (
    convert_finetuning_dataset,
)
from llmfoundry.data import write_mds
from llmfoundry.data.finetuning import tokenize_example
from llmfoundry.utils.exceptions import DatasetError
from tests.data.conftest import index_columns, loader_batches, stored_samples
from tests.data.finetuning.loader_cases import CHAT, EOS, PAD, X
from tests.data.finetuning.loader_cases import ROWS as LOADER_ROWS
from tests.eval.helpers import write_jsonl

ROWS = LOADER_ROWS[:2]
LONG_PROMPT = {"prompt": "import json\n" * 8, "response": "x"}


def ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def test_tokenized_examples_are_turns_and_the_loader_appends_the_final_eos(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    convert_finetuning_dataset(str(data), str(tmp_path / "mds"), str(tokenizer_dir))
    # 0.22's columns, and its tokens: the response without EOS (this tokenizer adds none).
    assert index_columns(tmp_path / "mds" / "train") == (["turns"], ["json"])
    prompts = [ids(tokenizer, row["prompt"]) for row in ROWS]
    responses = [ids(tokenizer, row["response"]) for row in ROWS]
    assert [s["turns"] for s in stored_samples(tmp_path / "mds" / "train")] == [
        [{"input_ids": p, "labels": r}] for p, r in zip(prompts, responses, strict=True)
    ]
    (batch,) = loader_batches(
        tokenizer,
        {"local": str(tmp_path / "mds"), "split": "train", "max_seq_len": 24, "shuffle": False},
    )
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        sequence = [*prompt, *response, EOS]
        padding = 24 - len(sequence)
        assert batch["input_ids"][row].tolist() == sequence + [PAD] * padding
        assert batch["labels"][row].tolist() == (
            [X] * len(prompt) + [*response, EOS] + [X] * padding
        )


def test_multi_turn_turns_get_eos_on_the_final_response_only(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    samples = [
        {"turns": [{"input_ids": [10, 11], "labels": [20]}, {"input_ids": [12], "labels": [21]}]},
        {"turns": [{"input_ids": [13], "labels": [22, EOS]}]},  # already ends with EOS
    ]
    write_mds(samples, str(tmp_path / "mds"), {"turns": "json"}, None)
    dataset = {
        "local": str(tmp_path / "mds"),
        "max_seq_len": 8,
        "shuffle": False,
        "target_responses": "all",
    }
    (batch,) = loader_batches(tokenizer, dataset)
    assert batch["input_ids"].tolist() == [
        [10, 11, 20, 12, 21, EOS, PAD, PAD],
        [13, 22, EOS, PAD, PAD, PAD, PAD, PAD],
    ]
    assert batch["labels"].tolist() == [
        [X, X, 20, X, 21, EOS, X, X],
        [X, 22, EOS, X, X, X, X, X],
    ]


def test_without_a_tokenizer_the_text_is_written_and_tokenized_when_read(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, chat_tokenizer_dir: tuple[Path, Any]
) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    summary = convert_finetuning_dataset(str(data), str(tmp_path / "text"), None)["train"]
    # Columns, encodings and bytes as LLM Foundry 0.22 writes them (compared side by side).
    assert index_columns(tmp_path / "text" / "train") == (["prompt", "response"], ["str", "str"])
    assert stored_samples(tmp_path / "text" / "train") == ROWS
    assert (summary.num_samples, summary.num_tokens) == (2, 0)
    hf = {
        "hf_name": "json",
        "hf_kwargs": {"data_files": {"train": str(data)}, "cache_dir": str(tmp_path / "hf")},
        "split": "train",
    }
    common = {"max_seq_len": 24, "shuffle": False}
    from_text = loader_batches(
        tokenizer, {"local": str(tmp_path / "text"), "split": "train", **common}
    )
    from_json = loader_batches(tokenizer, {**hf, **common})
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(from_text[0][key], from_json[0][key]), key

    _, chat_tokenizer = chat_tokenizer_dir
    chats = write_jsonl(tmp_path / "chats.jsonl", [CHAT])
    convert_finetuning_dataset(str(chats), str(tmp_path / "chat-text"), None)
    assert index_columns(tmp_path / "chat-text" / "train") == (["messages"], ["json"])
    assert stored_samples(tmp_path / "chat-text" / "train") == [CHAT]
    chat_hf = {
        **hf,
        "hf_kwargs": {"data_files": {"train": str(chats)}, "cache_dir": str(tmp_path / "hf-chat")},
    }
    chat_common = {"max_seq_len": 96, "shuffle": False}
    (from_chat_text,) = loader_batches(
        chat_tokenizer, {"local": str(tmp_path / "chat-text"), "split": "train", **chat_common}
    )
    (from_chat_json,) = loader_batches(chat_tokenizer, {**chat_hf, **chat_common})
    assert torch.equal(from_chat_text["labels"], from_chat_json["labels"])
    assert from_chat_text["labels"].ne(X).any()

    mixed = write_jsonl(tmp_path / "mixed.jsonl", [*ROWS, CHAT])
    with pytest.raises(
        DatasetError,
        match=r"mixed\.jsonl:3: the first example is a "
        r"prompt/response example, so every row must be",
    ):
        convert_finetuning_dataset(str(mixed), str(tmp_path / "mixed"), None)


def test_target_flags_decide_which_long_examples_are_kept(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", [ROWS[0], LONG_PROMPT])
    prompt = ids(tokenizer, LONG_PROMPT["prompt"])
    assert len(prompt) > 16

    def convert(name: str, **flags: Any) -> int:
        summary = convert_finetuning_dataset(
            str(data), str(tmp_path / name), str(tokenizer_dir), max_seq_len=16, **flags
        )["train"]
        return summary.num_samples

    # The long prompt fills max_seq_len: with no prompt as target nothing is left to learn.
    assert convert("default") == 1
    assert convert("all", target_prompts="all") == 2
    assert convert("short-rule", target_prompts=f"length>={len(prompt)}") == 2
    assert convert("long-rule", target_prompts=f"length>={len(prompt) + 1}") == 1
    assert convert("encoder-decoder", encoder_decoder=True) == 2

    # Read with the same targets, the kept example trains on its prompt ...
    dataset = {
        "local": str(tmp_path / "all"),
        "split": "train",
        "max_seq_len": 16,
        "shuffle": False,
        "target_prompts": "all",
    }
    (batch,) = loader_batches(tokenizer, dataset)
    assert batch["input_ids"][1].tolist() == prompt[:16]
    assert batch["labels"][1].tolist() == [X, *prompt[1:16]]
    # ... and an encoder-decoder reads the cut prompt as encoder input, the response as target.
    dataset = {
        "local": str(tmp_path / "encoder-decoder"),
        "split": "train",
        "max_seq_len": 16,
        "shuffle": False,
        "decoder_only_format": False,
    }
    (batch,) = loader_batches(tokenizer, dataset)
    assert batch["input_ids"][1].tolist() == [*prompt[:15], EOS]
    response = [*ids(tokenizer, "x"), EOS]
    assert batch["labels"][1].tolist() == response + [X] * (16 - len(response))
    assert batch["decoder_input_ids"][1, : len(response)].tolist() == [PAD, *response[:-1]]


def test_target_responses_all_keeps_chats_whose_final_response_is_cut(
    tmp_path: Path, chat_tokenizer_dir: tuple[Path, PreTrainedTokenizerBase]
) -> None:
    folder, chat_tokenizer = chat_tokenizer_dir
    first, second = tokenize_example(CHAT, chat_tokenizer, "row")["turns"]
    # Room for the first turn and the second prompt only: the final response is cut away.
    max_seq_len = len(first["input_ids"]) + len(first["labels"]) + len(second["input_ids"])
    data = write_jsonl(tmp_path / "chats.jsonl", [CHAT, CHAT])
    with pytest.raises(DatasetError, match=r"no examples were written .*no target"):
        convert_finetuning_dataset(
            str(data), str(tmp_path / "last"), str(folder), max_seq_len=max_seq_len
        )
    summary = convert_finetuning_dataset(
        str(data),
        str(tmp_path / "all"),
        str(folder),
        max_seq_len=max_seq_len,
        target_responses="all",
    )["train"]
    assert summary.num_samples == 2
    dataset = {
        "local": str(tmp_path / "all"),
        "split": "train",
        "max_seq_len": max_seq_len,
        "shuffle": False,
        "target_responses": "all",
    }
    (batch,) = loader_batches(chat_tokenizer, dataset)
    labels = [X] * len(first["input_ids"]) + first["labels"] + [X] * len(second["input_ids"])
    assert batch["labels"][0].tolist() == labels
