"""The converters write the same bytes for any number of worker processes, and batch
tokenization cuts the same samples as tokenizing one document at a time.

Small batches (and finetuning chunks) make every conversion span many tasks, so the workers'
results really are put back in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.data_prep import convert_finetuning_dataset as finetuning_module
from llmfoundry.command_utils.data_prep.convert_dataset_hf import convert_dataset_hf
from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json
from llmfoundry.command_utils.data_prep.convert_finetuning_dataset import (
    convert_finetuning_dataset,
)
from llmfoundry.command_utils.data_prep.convert_text_to_mds import (
    DONE_FILENAME,
    convert_text_to_mds,
)
from llmfoundry.command_utils.data_prep.workers import OrderedPool, chunked, resolve_workers
from llmfoundry.data import ConcatTokensDataset
from llmfoundry.data import token_batches as token_batches_module
from llmfoundry.utils.exceptions import ConfigError, DatasetError

EOS = "<|endoftext|>"
WORKER_COUNTS = (1, 2, 3)


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_batches_module, "BATCH_CHARS", 2_000)
    monkeypatch.setattr(finetuning_module, "ROWS_PER_TASK", 3)


@pytest.fixture
def texts(corpus_texts: list[str]) -> list[str]:
    """30 documents of 200 to 3,100 characters, some shorter than a sample, some longer."""
    return [corpus_texts[i % len(corpus_texts)][: 200 + 100 * i] for i in range(30)]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but the text converter's done-marker), by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != DONE_FILENAME
    }


def assert_same_for_every_count(folders: list[Path]) -> None:
    first = folder_bytes(folders[0])
    assert "index.json" in "".join(first) and any(".mds" in name for name in first)
    for folder in folders[1:]:
        assert folder_bytes(folder) == first, folder.name


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def reference_samples(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    length: int,
    bos: str,
    eos: str,
    wrap: bool,
) -> list[list[int]]:
    """Samples cut one document at a time, token by token, as the converters are specified."""
    bos_ids = tokenizer(bos, add_special_tokens=False)["input_ids"] if bos else []
    eos_ids = tokenizer(eos, add_special_tokens=False)["input_ids"] if eos else []
    buffer: list[int] = []
    samples: list[list[int]] = []
    for text in texts:
        buffer += bos_ids + tokenizer(text, verbose=False)["input_ids"] + eos_ids
        while len(buffer) >= length:
            samples.append(buffer[:length])
            buffer = buffer[length:] if wrap else []
    return samples


@pytest.mark.parametrize(("bos", "eos", "wrap"), [("", EOS, True), (EOS, EOS, False)])
def test_batches_cut_the_samples_of_one_document_at_a_time(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], bos: str, eos: str, wrap: bool
) -> None:
    dataset = ConcatTokensDataset(texts, tokenizer, 100, bos, eos, no_wrap=not wrap)

    samples = [sample["tokens"] for sample in dataset]

    assert {sample.dtype for sample in samples} == {np.dtype(np.int32)}
    expected = reference_samples(tokenizer, texts, 100, bos, eos, wrap)
    assert [sample.tolist() for sample in samples] == expected
    assert len(expected) > 10


def test_json_concat_is_the_same_for_any_worker_count(
    tmp_path: Path, tokenizer_dir: Path, texts: list[str]
) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    folders = [tmp_path / f"w{n}" for n in WORKER_COUNTS]

    summaries = [
        convert_dataset_json(
            str(source),
            str(folder),
            concat_tokens=64,
            tokenizer=str(tokenizer_dir),
            eos_text=EOS,
            compression="zstd",
            num_workers=n,
        )
        for folder, n in zip(folders, WORKER_COUNTS, strict=True)
    ]

    assert_same_for_every_count(folders)
    assert {(s.num_samples, s.num_tokens, s.rows_read) for s in summaries} == {
        (summaries[0].num_samples, 64 * summaries[0].num_samples, len(texts))
    }


def test_text_to_mds_is_the_same_for_any_number_of_processes(
    tmp_path: Path, tokenizer_dir: Path, texts: list[str]
) -> None:
    src = tmp_path / "txt"
    src.mkdir()
    for index, text in enumerate(texts):
        (src / f"doc{index:02d}.txt").write_text(text, encoding="utf-8")
    folders = [tmp_path / f"p{n}" for n in WORKER_COUNTS]

    for folder, n in zip(folders, WORKER_COUNTS, strict=True):
        convert_text_to_mds(
            str(tokenizer_dir), str(folder), str(src), 64, eos_text=EOS, bos_text=EOS, processes=n
        )

    assert_same_for_every_count(folders)
    # The number of processes is not part of the conversion: a rerun with another is a no-op.
    before = folder_bytes(folders[0])
    convert_text_to_mds(str(tokenizer_dir), str(folders[0]), str(src), 64, EOS, EOS, processes=2)
    assert folder_bytes(folders[0]) == before


def test_dataset_hf_is_the_same_for_any_worker_count(
    tmp_path: Path, tokenizer_dir: Path, texts: list[str]
) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    folders = [tmp_path / f"w{n}" for n in WORKER_COUNTS]

    for folder, n in zip(folders, WORKER_COUNTS, strict=True):
        convert_dataset_hf(
            "json",
            str(folder),
            data_files=[str(source)],
            concat_tokens=64,
            tokenizer=str(tokenizer_dir),
            eos_text=EOS,
            no_wrap=True,
            compression="zstd",
            num_workers=n,
        )

    assert_same_for_every_count([folder / "train" for folder in folders])


def test_finetuning_is_the_same_for_any_worker_count_bad_rows_included(
    tmp_path: Path, tokenizer_dir: Path, texts: list[str]
) -> None:
    # Every fifth prompt fills max_seq_len by itself: that example is dropped.
    cuts = [400 if i % 5 == 0 else 40 for i in range(len(texts))]
    rows: list[object] = [
        {"prompt": t[:c], "response": t[c : c + 150]} for t, c in zip(texts, cuts, strict=True)
    ]
    rows[7] = {"prompt": "no response"}
    rows[20] = {"prompt": 3, "response": "not a string prompt"}
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with source.open("a", encoding="utf-8") as file:
        file.write("{not json\n")
    folders = [tmp_path / f"w{n}" for n in WORKER_COUNTS]

    summaries = [
        convert_finetuning_dataset(
            str(source),
            str(folder),
            str(tokenizer_dir),
            max_seq_len=64,
            skip_bad_rows=True,
            num_workers=n,
        )["train"]
        for folder, n in zip(folders, WORKER_COUNTS, strict=True)
    ]

    assert_same_for_every_count([folder / "train" for folder in folders])
    dropped = summaries[0].rows_dropped
    assert dropped["invalid JSON"] == 1 and dropped["no target within max_seq_len"] >= 3
    assert summaries[0].num_samples == len(rows) - sum(dropped.values()) + 1 > 10
    assert {
        (s.num_samples, s.rows_read, tuple(sorted(s.rows_dropped.items()))) for s in summaries
    } == {(summaries[0].num_samples, len(rows) + 1, tuple(sorted(dropped.items())))}


@pytest.mark.parametrize("workers", WORKER_COUNTS)
def test_the_first_bad_row_is_named_whatever_the_worker_count(
    tmp_path: Path, tokenizer_dir: Path, texts: list[str], workers: int
) -> None:
    pairs: list[object] = [{"prompt": t[:100], "response": t[100:200]} for t in texts]
    pairs[11] = {"prompt": "no response"}  # fails in a worker, before the bad JSON is read
    pairs_file = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    with pairs_file.open("a", encoding="utf-8") as file:
        file.write("{not json\n")
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts] + [{"txt": "x"}])

    with pytest.raises(DatasetError, match=r"pairs\.jsonl:12: .*response") as pair_error:
        convert_finetuning_dataset(
            str(pairs_file), str(tmp_path / "ft"), str(tokenizer_dir), num_workers=workers
        )
    with pytest.raises(DatasetError, match=r"docs\.jsonl:31: row has no 'text' field") as error:
        convert_dataset_json(
            str(docs), str(tmp_path / "js"), "train", 64, str(tokenizer_dir), num_workers=workers
        )

    assert "\n" not in str(pair_error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "ft" / "train").exists() and not (tmp_path / "js").exists()


def shifted(offset: int, chunk: list[int]) -> list[int]:
    return [offset + n for n in chunk]


def test_pool_results_come_in_order_and_a_reading_error_comes_after_them() -> None:
    def numbers() -> Iterator[int]:
        yield from range(10)
        raise DatasetError("row 11 is bad")

    results: list[list[int]] = []
    with (
        OrderedPool(shifted, 100, 2) as pool,
        pytest.raises(DatasetError, match="row 11 is bad"),
    ):
        results.extend(pool.map(chunked(numbers(), 3)))

    assert results == [[100, 101, 102], [103, 104, 105], [106, 107, 108], [109]]


def test_worker_counts_default_to_the_usable_cores_and_reject_negatives() -> None:
    assert resolve_workers(None, "--num_workers") >= 1
    assert resolve_workers(0, "--num_workers") == 0
    with pytest.raises(ConfigError, match=r"--num_workers must be an integer of at least 0"):
        resolve_workers(-1, "--num_workers")
