"""convert_dataset_hf: local datasets in, MDS out, read back; splits, bad rows, summaries, script."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.data_prep.convert_dataset_hf import convert_dataset_hf
from llmfoundry.data import ConcatTokensDataset, StreamingTextDataset
from llmfoundry.data.data import BadRowError, MDSWriteSummary
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from tests import REPO

EOS = "<|endoftext|>"
EOS_ID = 0
REPO_ROOT = REPO
# The module itself (the package attribute of the same name is the function).
hf_module = importlib.import_module("llmfoundry.command_utils.data_prep.convert_dataset_hf")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def documents(corpus_texts: list[str]) -> list[str]:
    """Five documents of 1,500 to 3,500 characters, cut from the corpus."""
    return [text[: 1500 + 500 * i] for i, text in enumerate(corpus_texts[:5])]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts, "id": list(range(len(texts)))}), path)
    return path


def read_tokens(folder: Path) -> list[list[int]]:
    dataset = StreamingTextDataset(tokenizer=None, max_seq_len=10**6, local=str(folder))
    return [dataset[i].tolist() for i in range(dataset.num_samples)]


def read_texts(folder: Path) -> list[str]:
    dataset = StreamingTextDataset(tokenizer=None, max_seq_len=8, local=str(folder))
    return [dataset.get_item(i)["text"] for i in range(dataset.num_samples)]


def index_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("index.json")) if folder.exists() else []


def test_concat_tokens_are_the_texts_tokenized_with_eos(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase, documents: list[str]
) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": d} for d in documents])

    summaries = convert_dataset_hf(
        "json",
        str(tmp_path / "mds"),
        data_files=[str(source)],
        concat_tokens=64,
        tokenizer=str(tokenizer_dir),
        eos_text=EOS,
        compression="zstd",
        num_workers=0,
    )

    # Measured before reading back: reading decompresses the shards next to the originals.
    written = sum(p.stat().st_size for p in (tmp_path / "mds" / "train").iterdir())
    stream = [t for d in documents for t in [*tokenizer(d, verbose=False)["input_ids"], EOS_ID]]
    num_samples = len(stream) // 64
    expected = [stream[i * 64 : (i + 1) * 64] for i in range(num_samples)]
    assert read_tokens(tmp_path / "mds" / "train") == expected
    summary = summaries["train"]
    assert (summary.rows_read, summary.num_samples, summary.num_tokens) == (
        len(documents),
        num_samples,
        64 * num_samples,
    )
    assert summary.rows_dropped == {}
    assert summary.bytes_on_disk == written


def test_a_local_parquet_folder_converts_each_split_to_text_samples(
    tmp_path: Path, documents: list[str]
) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", documents[:3])
    write_parquet(tmp_path / "data" / "validation.parquet", documents[3:])

    summaries = convert_dataset_hf(
        str(tmp_path / "data"), str(tmp_path / "mds"), splits=["train", "validation"]
    )

    assert read_texts(tmp_path / "mds" / "train") == documents[:3]
    assert read_texts(tmp_path / "mds" / "validation") == documents[3:]
    assert summaries["validation"].num_tokens == 0
    assert summaries["validation"].num_samples == 2


def test_a_worker_process_writes_the_same_samples(
    tmp_path: Path, tokenizer_dir: Path, documents: list[str]
) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": d} for d in documents])

    def convert(out: str, num_workers: int) -> dict[str, MDSWriteSummary]:
        return convert_dataset_hf(
            "json",
            out,
            num_workers=num_workers,
            data_files=[str(source)],
            concat_tokens=32,
            tokenizer=str(tokenizer_dir),
            eos_text=EOS,
        )

    here = convert(str(tmp_path / "here"), 0)
    worker = convert(str(tmp_path / "worker"), 1)

    assert read_tokens(tmp_path / "worker" / "train") == read_tokens(tmp_path / "here" / "train")
    assert worker["train"].rows_read == here["train"].rows_read == len(documents)


def test_small_splits_are_truncated_copies_of_their_parent(
    tmp_path: Path, documents: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real sizes (100,000 / 10,000 / 3,000 samples) are larger than any test data.
    monkeypatch.setitem(hf_module.SMALL_SPLITS, "train_small", ("train", 2))
    monkeypatch.setitem(hf_module.SMALL_SPLITS, "val_xsmall", ("val", 1))
    write_parquet(tmp_path / "data" / "train.parquet", documents[:4])
    write_parquet(tmp_path / "data" / "validation.parquet", documents[4:])

    convert_dataset_hf(
        str(tmp_path / "data"),
        str(tmp_path / "mds"),
        splits=["train", "train_small", "val", "val_xsmall"],
    )

    assert read_texts(tmp_path / "mds" / "train") == documents[:4]
    assert read_texts(tmp_path / "mds" / "train_small") == documents[:2]
    assert read_texts(tmp_path / "mds" / "val") == documents[4:]  # read from 'validation'
    assert read_texts(tmp_path / "mds" / "val_xsmall") == documents[4:5]


def test_presets_know_llm_foundrys_splits() -> None:
    c4 = hf_module.PRESETS["c4"]
    assert hf_module.PRESETS["allenai/c4"] is c4
    assert (c4.hub_name, c4.default_subset, c4.text_column) == ("allenai/c4", "en", "text")
    sizes = {name: (p.hf_split, p.max_samples) for name, p in c4.splits.items()}
    assert sizes == {
        "train": ("train", None),
        "train_small": ("train", 100_000),
        "val": ("validation", None),
        "val_small": ("validation", 10_000),
        "val_xsmall": ("validation", 3_000),
    }


def test_a_missing_split_is_named_with_the_available_ones(
    tmp_path: Path, documents: list[str]
) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", documents[:2])
    write_parquet(tmp_path / "data" / "validation.parquet", documents[2:])

    with pytest.raises(ConfigError, match=r"has no split 'test'; available: train, validation$"):
        convert_dataset_hf(str(tmp_path / "data"), str(tmp_path / "mds"), splits=["train", "test"])
    assert not (tmp_path / "mds").exists()  # checked before anything is written

    # A preset's split names are known without loading anything (no network needed).
    with pytest.raises(ConfigError, match=r"'c4' has no split 'valid'.*val_xsmall"):
        convert_dataset_hf("c4", str(tmp_path / "mds"), splits=["valid"])


def test_bad_rows_are_named_by_split_row_and_field(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "rows.jsonl",
        [{"text": "one"}, {"text": "two"}, {"body": "three"}, {"text": 4}],
    )

    with pytest.raises(
        BadRowError,
        match=r"split 'train' row 3: field 'text' is missing or null; fix the row, or pass "
        r"--skip_bad_rows",
    ):
        convert_dataset_hf("json", str(tmp_path / "mds"), data_files=[str(source)])
    assert not (tmp_path / "mds" / "train").exists()

    summaries = convert_dataset_hf(
        "json", str(tmp_path / "mds"), data_files=[str(source)], skip_bad_rows=True
    )

    summary = summaries["train"]
    assert read_texts(tmp_path / "mds" / "train") == ["one", "two"]
    assert summary.rows_read == 4
    assert summary.rows_dropped == {"missing text field": 1, "non-string text field": 1}


def test_the_summary_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = write_jsonl(tmp_path / "rows.jsonl", [{"text": "one"}, {"text": None}])
    with caplog.at_level(logging.INFO, logger="llmfoundry"):
        convert_dataset_hf(
            "json", str(tmp_path / "mds"), data_files=[str(source)], skip_bad_rows=True
        )
    assert (
        "split train: read 2 rows (1 rows dropped: 1 missing text field); "
        "wrote 1 text samples (not tokenized); "
    ) in caplog.text
    assert f"on disk in {tmp_path / 'mds' / 'train'}" in caplog.text


def test_a_malformed_data_file_is_a_dataset_error(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text('{"text": "one"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"reading split 'train' after row 0 failed"):
        convert_dataset_hf("json", str(tmp_path / "mds"), data_files=[str(source)])
    assert index_files(tmp_path / "mds") == []


def test_an_interrupted_split_leaves_no_index(
    tmp_path: Path,
    tokenizer_dir: Path,
    documents: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", documents)
    write_parquet(tmp_path / "data" / "validation.parquet", documents)
    real_texts_of_rows = hf_module.texts_of_rows

    def interrupted_in_validation(rows, hf_split, *args, **kwargs) -> Iterator[str]:
        for number, text in enumerate(real_texts_of_rows(rows, hf_split, *args, **kwargs)):
            if hf_split == "validation" and number == 3:
                raise KeyboardInterrupt
            yield text

    monkeypatch.setattr(hf_module, "texts_of_rows", interrupted_in_validation)
    with pytest.raises(KeyboardInterrupt):
        convert_dataset_hf(
            str(tmp_path / "data"),
            str(tmp_path / "mds"),
            splits=["train", "validation"],
            concat_tokens=16,  # several samples are written before the interrupt
            tokenizer=str(tokenizer_dir),
            eos_text=EOS,
            num_workers=0,
        )

    # The finished split is whole; the interrupted one left nothing behind.
    assert index_files(tmp_path / "mds") == [tmp_path / "mds" / "train" / "index.json"]
    assert not (tmp_path / "mds" / "validation").exists()


def test_option_errors_name_the_option(tmp_path: Path, documents: list[str]) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"body": d} for d in documents])
    out = str(tmp_path / "mds")
    with pytest.raises(ConfigError, match="--concat_tokens needs --tokenizer"):
        convert_dataset_hf("json", out, data_files=[str(source)], concat_tokens=8)
    with pytest.raises(ConfigError, match="--tokenizer_kwargs is not valid JSON"):
        convert_dataset_hf(
            "json", out, concat_tokens=8, tokenizer="x", tokenizer_kwargs="{use_fast: 1}"
        )
    with pytest.raises(
        ConfigError, match=r"no column 'text' \(columns: body\); pass --text_column"
    ):
        convert_dataset_hf("json", out, data_files=[str(source)])
    with pytest.raises(MissingFileError, match=r"--dataset '.*nowhere' does not exist"):
        convert_dataset_hf(str(tmp_path / "nowhere"), out)

    (tmp_path / "mds" / "train").mkdir(parents=True)
    (tmp_path / "mds" / "train" / "old.mds").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"output folder '.*train' is not empty"):
        convert_dataset_hf("json", out, data_files=[str(source)], text_column="body")

    convert_dataset_hf(
        "json", out, data_files=[str(source)], text_column="body", splits=["train_small"]
    )
    assert read_texts(tmp_path / "mds" / "train_small") == documents


@pytest.mark.slow  # the script imports torch, transformers and Composer: ~20 s on 2 CPU cores
def test_the_script_converts_and_has_help(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase, documents: list[str]
) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": d} for d in documents])
    script = str(REPO_ROOT / "scripts" / "data_prep" / "convert_dataset_hf.py")
    convert = [
        *("--dataset", "json", "--data_files", str(source), "--out_root", str(tmp_path / "mds")),
        *("--concat_tokens", "64", "--tokenizer", str(tokenizer_dir), "--eos_text", EOS),
        *("--compression", "zstd", "--num_workers", "0"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    # Started together: each spends most of its time importing torch and Composer.
    runs = [
        subprocess.Popen(
            [sys.executable, script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in (["--help"], convert)
    ]
    (help_text, help_err), (_, convert_err) = (run.communicate(timeout=300) for run in runs)

    assert runs[0].returncode == 0, help_err
    for flag in ("--dataset", "--data_subset", "--splits", "--concat_tokens", "--no_wrap"):
        assert flag in help_text
    assert runs[1].returncode == 0, convert_err
    expected = [
        s["tokens"].tolist() for s in ConcatTokensDataset(documents, tokenizer, 64, "", EOS)
    ]
    assert read_tokens(tmp_path / "mds" / "train") == expected
    assert f"split train: read {len(documents)} rows (no rows dropped); wrote" in convert_err
