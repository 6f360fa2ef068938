"""The ``finetuning`` data loader end to end: HF JSON sources, preprocessing, packing, MDS
columns, ``safe_load`` and config and data errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.data.finetuning import build_finetuning_dataloader, dataset_constructor
from llmfoundry.data.finetuning.collator import IGNORE_INDEX
from llmfoundry.data.finetuning.dataset_config import parse_dataset_config
from llmfoundry.data.finetuning.packing import BinPackCollator
from llmfoundry.utils.builders import build_dataloader_from_section
from llmfoundry.utils.exceptions import ConfigError, DatasetError
from tests.data.conftest import collator_of, dataloader_of
from tests.data.finetuning.loader_cases import (
    EOS,
    PAD,
    ROWS,
    X,
    ids,
    json_dataset,
    write_jsonl,
    write_mds,
)


def test_yaml_section_builds_through_the_registry(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    section = {
        "name": "finetuning",
        "dataset": json_dataset(tmp_path, ROWS),
        "drop_last": True,
        "num_workers": 0,
        "pin_memory": False,
        "prefetch_factor": 2,
        "persistent_workers": True,
        "timeout": 0,
    }
    assert registry.dataloaders.get("finetuning") is build_finetuning_dataloader
    spec = build_dataloader_from_section("train_loader", section, tokenizer, 2)
    batches = list(spec.dataloader)
    assert len(batches) == 3
    first = batches[0]
    assert set(first) == {"input_ids", "attention_mask", "labels"}
    assert first["input_ids"].shape == (2, 32)
    prompt = ids(tokenizer, ROWS[0]["prompt"], special=True)
    response = [*ids(tokenizer, ROWS[0]["response"]), EOS]
    n = len(prompt) + len(response)
    assert first["input_ids"][0, :n].tolist() == prompt + response
    assert first["input_ids"][0, n:].eq(PAD).all()
    assert first["labels"][0].tolist() == [IGNORE_INDEX] * len(prompt) + response + [
        IGNORE_INDEX
    ] * (32 - n)
    assert spec.get_num_tokens_in_batch is not None
    assert spec.get_num_tokens_in_batch(first) == int(first["attention_mask"].sum())


LEFTOVER_BINS = (
    r"train_loader\.dataset\.max_leftover_bins_to_keep must be a non-negative int or null, got "
)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        pytest.param(
            {"max_seq_length": 32},
            r"train_loader\.dataset\.max_seq_length is not a valid key; did you mean 'max_seq_len'",
            id="unknown key suggests the right one",
        ),
        *(
            pytest.param(
                {"packing_ratio": 2, "max_leftover_bins_to_keep": value},
                LEFTOVER_BINS,
                id=f"max_leftover_bins_to_keep={value!r}",
            )
            for value in [-1, 1.5, True, "2"]
        ),
    ],
)
def test_bad_dataset_keys_are_named(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, keys: dict[str, Any], message: str
) -> None:
    dataset = json_dataset(tmp_path, ROWS, **keys)
    with pytest.raises(ConfigError, match=message):
        build_finetuning_dataloader(tokenizer, 2, dataset)


def test_missing_split_names_the_available_ones(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    dataset = json_dataset(tmp_path, ROWS, split="validation")
    with pytest.raises(
        DatasetError, match=r"split 'validation' is not a split of 'json'; available: \['train'\]"
    ):
        build_finetuning_dataloader(tokenizer, 2, dataset, section="eval_loader")


def test_bad_row_names_the_file_row_and_field(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    rows = [*ROWS[:3], {"prompt": "a", "response": ""}, *ROWS[3:]]
    dataset = json_dataset(tmp_path, rows)
    with pytest.raises(DatasetError, match=r"train\.jsonl', row 3: field 'response' is empty"):
        build_finetuning_dataloader(tokenizer, 2, dataset)


def test_a_section_without_drop_last_keeps_the_last_short_batch(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    # LLM Foundry 0.22's finetuning loader defaults: drop_last false, pin_memory true (pinning
    # only applies with CUDA).
    section = {"name": "finetuning", "dataset": json_dataset(tmp_path, ROWS[:5])}
    spec = build_dataloader_from_section("train_loader", section, tokenizer, 2)
    assert [len(batch["input_ids"]) for batch in spec.dataloader] == [2, 2, 1]
    loader = dataloader_of(spec)
    assert loader.pin_memory is torch.cuda.is_available()


def test_long_examples_are_truncated_or_dropped_and_counted(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    long_prompt = "import json\n" * 20  # far more than 32 tokens: dropped
    long_response = "return None\n" * 20  # cut to max_seq_len
    rows = [
        *ROWS[:2],
        {"prompt": long_prompt, "response": "x"},
        {"prompt": "y", "response": long_response},
    ]
    dataset = json_dataset(tmp_path, rows, allow_pad_trimming=True)
    with caplog.at_level(logging.INFO, logger="llmfoundry.data.finetuning"):
        spec = build_finetuning_dataloader(tokenizer, 1, dataset, drop_last=False)
    assert "4 examples; 1 longer than max_seq_len=32 are truncated" in caplog.text
    assert "1 dropped" in caplog.text
    batches = list(spec.dataloader)
    assert len(batches) == 3  # the dropped example is gone
    truncated = batches[2]
    assert truncated["input_ids"].shape == (1, 32)
    assert (
        truncated["input_ids"][0].tolist()
        == (ids(tokenizer, "y", special=True) + ids(tokenizer, long_response))[:32]
    )
    # Pad trimming: the first batch keeps max_seq_len, later ones a multiple of 8.
    assert batches[0]["input_ids"].shape[1] == 32
    assert batches[1]["input_ids"].shape[1] % 8 == 0 and batches[1]["input_ids"].shape[1] < 32


def test_preprocessing_fn_by_import_path(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_tasks.py").write_text(
        "def question_answer(row):\n    return {'prompt': 'Q: ' + row['q'], 'response': ' A: ' + row['a']}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [{"q": "why?", "a": "because"}, {"q": "how?", "a": "so"}]
    dataset = json_dataset(tmp_path, rows, preprocessing_fn="my_tasks:question_answer")
    batch = next(iter(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader))
    expected = ids(tokenizer, "Q: why?", special=True) + ids(tokenizer, " A: because") + [EOS]
    assert batch["input_ids"][0, : len(expected)].tolist() == expected

    with pytest.raises(
        ConfigError,
        match=r"preprocessing_fn: module 'my_tasks' has no function 'question_answr'; did you mean 'question_answer'",
    ):
        build_finetuning_dataloader(
            tokenizer, 2, {**dataset, "preprocessing_fn": "my_tasks:question_answr"}
        )
    with pytest.raises(ConfigError, match=r"cannot import module 'no_such_tasks'"):
        build_finetuning_dataloader(
            tokenizer, 2, {**dataset, "preprocessing_fn": "no_such_tasks:question_answer"}
        )
    # The run's config check (before any model or tokenizer is built) reports it too.
    with pytest.raises(ConfigError, match=r"^train_loader\.dataset\.preprocessing_fn: cannot"):
        parse_dataset_config(
            {**dataset, "preprocessing_fn": "no_such_tasks:question_answer"}, "train_loader.dataset"
        )
    # A row the function fails on (JSON loading fills the missing field with None) is named.
    write_jsonl(tmp_path / "train.jsonl", [*rows, {"q": "no answer"}])
    with pytest.raises(
        DatasetError, match=r"row 2: preprocessing function question_answer failed \(TypeError"
    ):
        build_finetuning_dataloader(tokenizer, 2, dataset)


def test_preprocessing_fn_as_a_column_mapping(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    # LLM Foundry's mapping form: the named columns become the prompt and the response.
    rows = [{"text": "Long story.", "summary": " Short."}, {"text": "Tale.", "summary": " T."}]
    mapping = {"prompt": "text", "response": "summary"}
    dataset = json_dataset(tmp_path, rows, preprocessing_fn=mapping)
    batch = next(iter(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader))
    expected = ids(tokenizer, "Long story.", special=True) + ids(tokenizer, " Short.") + [EOS]
    assert batch["input_ids"][0, : len(expected)].tolist() == expected

    with pytest.raises(
        ConfigError,
        match=r"^train_loader\.dataset\.preprocessing_fn as a mapping takes exactly prompt and "
        r"response",
    ):
        parse_dataset_config(
            {**dataset, "preprocessing_fn": {"prompt": "text", "answer": "summary"}},
            "train_loader.dataset",
        )
    # JSON loading fills a row's missing column with None: the row is named.
    write_jsonl(tmp_path / "train.jsonl", [*rows, {"text": "no summary", "abstract": "x"}])
    with pytest.raises(DatasetError, match=r"row 2: field 'response' must be a string, got None"):
        build_finetuning_dataloader(tokenizer, 2, dataset)


def test_eos_token_id_is_checked_against_the_tokenizer(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    # LLM Foundry's DBRX finetuning YAMLs name the tokenizer's EOS id; finetuning only checks it.
    rows = build_finetuning_dataloader(tokenizer, 2, json_dataset(tmp_path, ROWS)).dataloader
    same = build_finetuning_dataloader(tokenizer, 2, json_dataset(tmp_path, ROWS, eos_token_id=EOS))
    assert all(
        torch.equal(a["input_ids"], b["input_ids"])
        for a, b in zip(rows, same.dataloader, strict=True)
    )
    with pytest.raises(ConfigError, match=r"^train_loader\.dataset\.bos_token_id is 7, but the"):
        build_finetuning_dataloader(tokenizer, 2, json_dataset(tmp_path, ROWS, bos_token_id=7))
    overridden = json_dataset(
        tmp_path, ROWS, bos_token_id=7, override_bos_token_id_mismatch_error=True
    )
    assert len(list(build_finetuning_dataloader(tokenizer, 2, overridden).dataloader)) == 3


def test_registered_alpaca_preprocessing(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    assert {
        "tatsu-lab/alpaca",
        "mosaicml/dolly_hhrlhf",
        "bigscience/P3",
        "Muennighoff/flan",
    } <= set(dataset_constructor.print_registered_tasks())
    alpaca = dataset_constructor.resolve(None, "tatsu-lab/alpaca", "key")
    assert alpaca is not None
    # LLM Foundry splits the row's rendered text at its response marker
    text = "Intro.\n\n### Instruction:\nAdd.\n\n### Input:\n1 2\n\n### Response:\n3"
    assert alpaca({"text": text, "output": "ignored"}) == {
        "prompt": "Intro.\n\n### Instruction:\nAdd.\n\n### Input:\n1 2\n\n### Response:",
        "response": "\n3",
    }
    rows = [{"text": "Say hi.\n\n### Response: hi"}] * 2
    dataset = json_dataset(tmp_path, rows, preprocessing_fn="tatsu-lab/alpaca", max_seq_len=128)
    batch = next(iter(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader))
    assert (batch["labels"] != IGNORE_INDEX).sum(dim=1).tolist() == [
        len(ids(tokenizer, " hi")) + 1
    ] * 2


def test_packing_ratio_packs_rows_and_keeps_every_example(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    dataset = json_dataset(tmp_path, ROWS * 4, packing_ratio=3)
    spec = build_finetuning_dataloader(tokenizer, 2, dataset)
    batches = list(spec.dataloader)
    assert len(batches) == 4  # 24 examples, 6 per batch
    seen = 0
    for batch in batches:
        assert batch["input_ids"].shape == (2, 32)
        assert torch.equal(batch["sequence_id"] >= 0, batch["attention_mask"].bool())
        seen += int((batch["sequence_id"].amax(dim=1) + 1).sum())
    collate_fn = collator_of(spec, BinPackCollator)
    assert seen + len(collate_fn.leftovers) == 24


def test_auto_packing_ratio(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = json_dataset(tmp_path, ROWS * 10, packing_ratio="auto", max_seq_len=64)
    with caplog.at_level(logging.INFO, logger="llmfoundry.data.finetuning"):
        spec = build_finetuning_dataloader(tokenizer, 2, dataset)
    assert "packing_ratio: auto chose" in caplog.text
    batch_size = dataloader_of(spec).batch_size
    assert batch_size is not None and batch_size > 2
    assert "sequence_id" in next(iter(spec.dataloader))


def test_mds_token_columns(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    samples = [
        {"input_ids": np.asarray([5, 6, 7], np.int32), "labels": np.asarray([8, 9, EOS], np.int32)},
        {"input_ids": np.asarray([10], np.int32), "labels": np.asarray([11, EOS], np.int32)},
    ]
    write_mds(
        tmp_path / "mds" / "train",
        {"input_ids": "ndarray:int32", "labels": "ndarray:int32"},
        samples,
    )
    dataset = {"local": str(tmp_path / "mds"), "split": "train", "max_seq_len": 8, "shuffle": False}
    batch = next(iter(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader))
    assert batch["input_ids"].tolist() == [
        [5, 6, 7, 8, 9, EOS, PAD, PAD],
        [10, 11, EOS] + [PAD] * 5,
    ]
    assert batch["labels"].tolist() == [[X, X, X, 8, 9, EOS, X, X], [X, 11, EOS] + [X] * 5]


def test_mds_text_columns(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    write_mds(tmp_path / "mds", {"prompt": "str", "response": "str"}, ROWS[:2])
    dataset = {"local": str(tmp_path / "mds"), "max_seq_len": 32, "shuffle": False}
    batch = next(iter(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader))
    expected = (
        ids(tokenizer, ROWS[1]["prompt"], special=True)
        + ids(tokenizer, ROWS[1]["response"])
        + [EOS]
    )
    assert batch["input_ids"][1, : len(expected)].tolist() == expected


def test_a_source_is_required(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ConfigError, match=r"train_loader\.dataset needs a source: hf_name"):
        build_finetuning_dataloader(tokenizer, 2, {"max_seq_len": 8})
    with pytest.raises(ConfigError, match=r"train_loader\.dataset\.max_seq_len is missing"):
        build_finetuning_dataloader(tokenizer, 2, {"hf_name": "json"})
    with pytest.raises(ConfigError, match=r"packing_ratio is 0\.5"):
        build_finetuning_dataloader(
            tokenizer, 2, {"hf_name": "json", "max_seq_len": 8, "packing_ratio": 0.5}
        )


# --- safe_load, max_leftover_bins_to_keep ---


def test_safe_load_accepts_local_json_files(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    dataset = json_dataset(tmp_path, ROWS, safe_load=True)
    assert len(list(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader)) == 3
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ROWS)
    (folder / ".gitattributes").write_text("*.jsonl filter=lfs\n")
    dataset = {
        **json_dataset(tmp_path, ROWS),
        "hf_name": str(folder),
        "hf_kwargs": {"cache_dir": str(tmp_path / "hf")},
        "safe_load": True,
    }
    assert len(list(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader)) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"hf_name": "{folder}"},
            r"train_loader\.dataset\.safe_load is true, but \S*loader\.py in hf_name .* is not "
            r"\.csv/\.json/\.jsonl/\.parquet",
        ),
        (
            {"hf_name": "{folder}/loader.py"},
            r"train_loader\.dataset\.safe_load is true, but hf_name '\S*loader\.py' is a dataset "
            r"script",
        ),
        (
            {"hf_name": "someone/some_dataset"},
            r"train_loader\.dataset\.safe_load is true, but hf_name 'someone/some_dataset' is not "
            r"a local folder",
        ),
        (
            {"hf_kwargs": {"data_files": "{folder}/loader.py"}},
            r"train_loader\.dataset\.safe_load is true, but data file '\S*loader\.py' is not a local",
        ),
        (
            {"hf_kwargs": {"data_files": "https://example.com/train.jsonl"}},
            r"data file 'https://example\.com/train\.jsonl' is not a local",
        ),
        (
            {"hf_kwargs": {"trust_remote_code": True, "data_files": "{folder}/train.jsonl"}},
            r"train_loader\.dataset\.safe_load is true, so train_loader\.dataset\.hf_kwargs\."
            r"trust_remote_code .* is not allowed",
        ),
        ({"hf_kwargs": {}}, r"hf_name is 'json', so train_loader\.dataset\.hf_kwargs\.data_files"),
        (
            {"safe_load": "yes"},
            r"train_loader\.dataset\.safe_load must be bool \(true or false\), got str 'yes'",
        ),
    ],
)
def test_safe_load_refuses_code_and_remote_sources(
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    overrides: dict[str, Any],
    message: str,
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ROWS)
    (folder / "loader.py").write_text("raise SystemExit('dataset code ran')\n")
    filled = json.loads(json.dumps(overrides).replace("{folder}", str(folder)))
    dataset = {**json_dataset(tmp_path, ROWS), "safe_load": True, **filled}
    with pytest.raises(ConfigError, match=message) as error:
        build_finetuning_dataloader(tokenizer, 2, dataset)
    assert "\n" not in str(error.value)


def test_max_leftover_bins_to_keep_reaches_the_packer(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    dataset = json_dataset(tmp_path, ROWS * 4, packing_ratio=3, max_leftover_bins_to_keep=0)
    spec = build_finetuning_dataloader(tokenizer, 2, dataset)
    collate_fn = collator_of(spec, BinPackCollator)
    assert collate_fn.max_leftover_bins_to_keep == 0
    seen = sum(int((b["sequence_id"].amax(dim=1) + 1).sum()) for b in spec.dataloader)
    assert collate_fn.leftovers == []  # nothing is carried over
    assert collate_fn.discarded_examples > 0  # (without the key, some would be)
    assert seen + collate_fn.discarded_examples == 24
