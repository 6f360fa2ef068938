"""convert_finetuning_dataset: tokenized MDS that the finetuning loader reads back exactly."""

from __future__ import annotations

import json
import logging
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.data_prep.convert_finetuning_dataset import (
    convert_finetuning_dataset,
)
from llmfoundry.data.data import MDSWriteSummary
from llmfoundry.data.finetuning import tokenize_example
from llmfoundry.utils.exceptions import ConfigError, DatasetError
from tests.data.conftest import BUCKET, index_columns, loader_batches, stored_samples
from tests.data.finetuning.loader_cases import CHAT, ROWS
from tests.eval.helpers import write_jsonl

CHATS = [
    CHAT,
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "while True:"},
            {"role": "assistant", "content": "break"},
        ]
    },
]


def _convert(
    dataset: str | Path, out: Path, tokenizer_dir: Path, **options: Any
) -> dict[str, MDSWriteSummary]:
    """``convert_finetuning_dataset`` of ``dataset`` into ``out``, tokenized by the tokenizer
    saved in ``tokenizer_dir``; ``options`` are its other arguments."""
    return convert_finetuning_dataset(
        dataset=str(dataset), out_root=str(out), tokenizer=str(tokenizer_dir), **options
    )


def assert_same_batches(
    left: list[dict[str, torch.Tensor]], right: list[dict[str, torch.Tensor]]
) -> None:
    assert len(left) == len(right) > 0
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def assert_mds_reads_like_json(
    tokenizer: PreTrainedTokenizerBase, tmp_path: Path, data: str, common: dict[str, Any]
) -> None:
    """The finetuning loader gives the same batches from the converted ``tmp_path / "mds"`` as
    from the JSONL file ``data`` it was converted from."""
    from_mds = loader_batches(
        tokenizer, {"local": str(tmp_path / "mds"), "split": "train", **common}
    )
    from_json = loader_batches(
        tokenizer,
        {
            "hf_name": "json",
            "hf_kwargs": {"data_files": {"train": str(data)}, "cache_dir": str(tmp_path / "hf")},
            "split": "train",
            **common,
        },
    )
    assert_same_batches(from_mds, from_json)


def test_prompt_response_round_trip_matches_the_hf_loader(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    summaries = _convert(data, tmp_path / "mds", tokenizer_dir)
    summary = summaries["train"]
    assert (summary.num_samples, summary.rows_read, summary.rows_dropped) == (6, 6, {})
    expected_turns = [tokenize_example(row, tokenizer, "row")["turns"] for row in ROWS]
    assert summary.num_tokens == sum(
        len(t[0]["input_ids"]) + len(t[0]["labels"]) for t in expected_turns
    )
    # LLM Foundry 0.22's layout: one json column of turns.
    assert index_columns(tmp_path / "mds" / "train") == (["turns"], ["json"])
    stored = stored_samples(str(tmp_path / "mds" / "train"))
    assert [s["turns"] for s in stored] == expected_turns

    common = {"max_seq_len": 16, "shuffle": False, "target_prompts": "length>=4"}
    assert_mds_reads_like_json(tokenizer, tmp_path, data, common)


def test_chats_are_written_as_turns_and_read_back_exactly(
    tmp_path: Path, chat_tokenizer_dir: tuple[Path, PreTrainedTokenizerBase]
) -> None:
    chat_dir, chat_tokenizer = chat_tokenizer_dir
    data = write_jsonl(tmp_path / "chats.jsonl", CHATS)
    summaries = convert_finetuning_dataset(
        dataset=str(data), out_root=str(tmp_path / "mds"), tokenizer=str(chat_dir)
    )
    assert summaries["train"].num_samples == 2
    stored = stored_samples(str(tmp_path / "mds" / "train"))
    assert set(stored[0]) == {"turns"}
    assert len(stored[0]["turns"]) == 2  # one turn per assistant message

    common = {"max_seq_len": 64, "shuffle": False, "target_responses": "all"}
    assert_mds_reads_like_json(chat_tokenizer, tmp_path, data, common)


def test_bad_rows_are_named_by_file_and_line_and_leave_no_index(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    data = write_jsonl(
        tmp_path / "train.jsonl", [*ROWS[:2], {"prompt": "a", "response": ""}, *ROWS[2:]]
    )
    out = tmp_path / "mds"
    with pytest.raises(DatasetError, match=r"train\.jsonl:3.*field 'response' is empty"):
        _convert(data, out, tokenizer_dir)
    assert not list(out.rglob("index.json"))

    (tmp_path / "bad").mkdir()
    raw = tmp_path / "bad" / "train.jsonl"
    raw.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + b'{"prompt": "\xff", "response": "x"}\n')
    with pytest.raises(DatasetError, match=r"train\.jsonl:2: not valid UTF-8"):
        _convert(raw, tmp_path / "out2", tokenizer_dir)
    assert not list((tmp_path / "out2").rglob("index.json"))


def test_skipping_bad_rows_counts_them_by_reason(tmp_path: Path, tokenizer_dir: Path) -> None:
    data = write_jsonl(
        tmp_path / "train.jsonl",
        [
            *ROWS,
            {"prompt": "a", "response": ""},
            {"prompt": 3, "response": "x"},
            "{not json",
            {"question": "no prompt field"},
        ],
    )
    summary = _convert(
        data,
        tmp_path / "mds",
        tokenizer_dir,
        skip_bad_rows=True,
    )["train"]
    assert summary.num_samples == len(ROWS)
    assert summary.rows_read == len(ROWS) + 4
    assert summary.rows_dropped == {"invalid example": 3, "invalid JSON": 1}
    assert "4 rows dropped: 1 invalid JSON, 3 invalid example" in summary.describe()


def test_prompts_filling_max_seq_len_are_dropped_long_examples_kept(
    tmp_path: Path,
    tokenizer_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    long_prompt = {"prompt": "import json\n" * 20, "response": "x"}
    long_response = {"prompt": "y", "response": "return None\n" * 20}
    data = write_jsonl(tmp_path / "train.jsonl", [ROWS[0], long_prompt, long_response])
    with caplog.at_level(logging.INFO):
        summary = _convert(
            data,
            tmp_path / "mds",
            tokenizer_dir,
            max_seq_len=32,
        )["train"]
    assert summary.num_samples == 2
    assert summary.rows_dropped == {"no target within max_seq_len": 1}
    assert "1 examples longer than max_seq_len=32 were kept whole" in caplog.text
    stored = stored_samples(str(tmp_path / "mds" / "train"))
    kept = tokenize_example(long_response, tokenizer, "row")["turns"]
    assert stored[1]["turns"] == kept  # whole, not cut to 32


def test_split_folder_default_and_explicit_splits(tmp_path: Path, tokenizer_dir: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ROWS[:4])
    write_jsonl(folder / "test.jsonl", ROWS[4:])
    # Defaults are train and validation; a missing validation is skipped with a warning.
    summaries = _convert(folder, tmp_path / "a", tokenizer_dir)
    assert {k: v.num_samples for k, v in summaries.items()} == {"train": 4}
    summaries = _convert(
        folder,
        tmp_path / "b",
        tokenizer_dir,
        splits=["train", "test"],
    )
    assert {k: v.num_samples for k, v in summaries.items()} == {"train": 4, "test": 2}
    with pytest.raises(
        ConfigError, match=r"has no split 'tset'; did you mean 'test'.*available: test, train"
    ):
        _convert(
            folder,
            tmp_path / "c",
            tokenizer_dir,
            splits=["tset"],
        )
    assert not (tmp_path / "c").exists()


@pytest.fixture
def user_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    module = types.ModuleType("my_preprocessors")

    def qa(row: Mapping[str, Any]) -> dict[str, str]:
        return {"prompt": f"Q: {row['question']}\nA:", "response": f" {row['answer']}"}

    vars(module)["qa"] = qa
    monkeypatch.setitem(sys.modules, "my_preprocessors", module)
    yield "my_preprocessors:qa"


def test_preprocessor_from_a_module_and_the_registered_alpaca_one(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase, user_module: str
) -> None:
    qa_rows = [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}]
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows)
    _convert(
        data,
        tmp_path / "qa",
        tokenizer_dir,
        preprocessor=user_module,
    )
    stored = stored_samples(str(tmp_path / "qa" / "train"))
    expected = tokenize_example({"prompt": "Q: 1+1?\nA:", "response": " 2"}, tokenizer, "r")
    assert stored[0]["turns"] == expected["turns"]

    text = "Intro.\n\n### Instruction:\nAdd 1 and 1.\n\n### Response:\n2"
    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", [{"text": text}])
    _convert(
        alpaca,
        tmp_path / "alpaca",
        tokenizer_dir,
        preprocessor="tatsu-lab/alpaca",
    )
    stored = stored_samples(str(tmp_path / "alpaca" / "train"))
    prompt, response = text.split("### Response:")
    expected = tokenize_example(
        {"prompt": prompt + "### Response:", "response": response}, tokenizer, "r"
    )
    assert stored[0]["turns"] == expected["turns"]

    with pytest.raises(ConfigError, match="--preprocessor and --skip-preprocessing"):
        _convert(
            data,
            tmp_path / "x",
            tokenizer_dir,
            preprocessor=user_module,
            skip_preprocessing=True,
        )
    with pytest.raises(
        ConfigError, match=r"--preprocessor: 'tatsu-lab/alpacca' is not a registered"
    ):
        _convert(
            data,
            tmp_path / "y",
            tokenizer_dir,
            preprocessor="tatsu-lab/alpacca",
        )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_hf_builder_source_with_workers_writes_the_same_examples(
    tmp_path: Path, tokenizer_dir: Path, num_workers: int
) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    reference = _convert(data, tmp_path / "ref", tokenizer_dir)["train"]
    summary = convert_finetuning_dataset(
        dataset="json",
        data_files=[str(data)],
        out_root=str(tmp_path / "hf"),
        tokenizer=str(tokenizer_dir),
        num_workers=num_workers,
    )["train"]
    assert (summary.num_samples, summary.num_tokens, summary.rows_read) == (
        reference.num_samples,
        reference.num_tokens,
        reference.rows_read,
    )

    def rows(folder: str) -> list[str]:
        return sorted(json.dumps(s["turns"]) for s in stored_samples(folder))

    assert rows(str(tmp_path / "hf" / "train")) == rows(str(tmp_path / "ref" / "train"))


def test_option_errors(tmp_path: Path, tokenizer_dir: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    with pytest.raises(ConfigError, match=r"--target_prompts is 'some'; use none, all or length"):
        convert_finetuning_dataset(
            dataset=str(data), out_root=str(tmp_path / "a"), tokenizer="t", target_prompts="some"
        )
    with pytest.raises(ConfigError, match="--encoder_decoder trains on the last response only"):
        convert_finetuning_dataset(
            dataset=str(data),
            out_root=str(tmp_path / "a"),
            tokenizer="t",
            target_responses="all",
            encoder_decoder=True,
        )
    with pytest.raises(ConfigError, match="--max_seq_len must be a positive int, got int 0"):
        convert_finetuning_dataset(
            dataset=str(data), out_root=str(tmp_path / "a"), tokenizer="t", max_seq_len=0
        )
    (tmp_path / "full" / "train").mkdir(parents=True)
    (tmp_path / "full" / "train" / "old.mds").write_text("x")
    with pytest.raises(ConfigError, match=r"output folder '.*full/train' is not empty"):
        _convert(data, tmp_path / "full", tokenizer_dir)


def remote_keys(client: Any, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return sorted(
        obj["Key"][len(prefix) + 1 :] for page in pages for obj in page.get("Contents", [])
    )


def test_remote_out_root_is_uploaded_complete_and_streams_back(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase, s3: Any
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ROWS)
    write_jsonl(folder / "validation.jsonl", ROWS[:2])
    out_root = f"s3://{BUCKET}/ft"
    summaries = convert_finetuning_dataset(
        dataset=str(folder), out_root=out_root, tokenizer=str(tokenizer_dir),
        local=str(tmp_path / "staging"),
    )  # fmt: skip
    assert summaries["train"].out == f"{out_root}/train"
    assert remote_keys(s3, "ft/train") == ["index.json", "shard.00000.mds"]
    assert remote_keys(s3, "ft/validation") == ["index.json", "shard.00000.mds"]

    _convert(folder, tmp_path / "local", tokenizer_dir)
    common = {"split": "train", "max_seq_len": 16, "shuffle": False}
    streamed = loader_batches(
        tokenizer, {"remote": out_root, "local": str(tmp_path / "cache"), **common}
    )
    local = loader_batches(tokenizer, {"local": str(tmp_path / "local"), **common})
    assert_same_batches(streamed, local)

    # A split folder that already holds objects is refused before anything is written.
    with pytest.raises(
        ConfigError, match=r"output folder 's3://corpus-bucket/ft/train' is not empty"
    ):
        convert_finetuning_dataset(
            dataset=str(folder), out_root=out_root, tokenizer=str(tokenizer_dir)
        )


def test_failed_remote_conversion_uploads_nothing(
    tmp_path: Path, tokenizer_dir: Path, s3: Any
) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", [*ROWS, {"prompt": "a", "response": 5}])
    with pytest.raises(DatasetError, match=r"train\.jsonl:7.*field 'response' must be a string"):
        convert_finetuning_dataset(
            dataset=str(data), out_root=f"s3://{BUCKET}/bad", tokenizer=str(tokenizer_dir)
        )
    assert remote_keys(s3, "bad/train") == []
