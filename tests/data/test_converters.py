"""The converters: concatenation, the JSON and text converters, and their scripts."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json
from llmfoundry.command_utils.data_prep.convert_text_to_mds import (
    DONE_FILENAME,
    convert_text_to_mds,
)
from llmfoundry.data import ConcatTokensDataset, NoConcatDataset, StreamingTextDataset
from llmfoundry.data.data import MDSWriteSummary
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from tests import REPO

EOS = "<|endoftext|>"
EOS_ID = 0
REPO_ROOT = REPO


@pytest.fixture
def documents(corpus_texts: list[str]) -> list[str]:
    """Five documents of 1,500 to 4,000 characters, cut from the corpus."""
    return [text[: 1500 + 500 * i] for i, text in enumerate(corpus_texts[:5])]


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, verbose=False)["input_ids"]


def read_tokens(folder: Path, split: str | None = None) -> list[list[int]]:
    """Every sample of an MDS folder, in order, as token-id lists."""
    dataset = StreamingTextDataset(
        tokenizer=None, max_seq_len=10**6, local=str(folder), split=split
    )
    return [dataset[i].tolist() for i in range(dataset.num_samples)]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_text_files(folder: Path, texts: list[str]) -> Path:
    for index, text in enumerate(texts):
        # A sub-folder for some files: the search is recursive; names sort in document order.
        file = folder / ("nested" if index % 2 else "") / f"doc{index:02d}.txt"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
    return folder


def file_stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every file under ``folder``: changes if a file is rewritten."""
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


# ConcatTokensDataset / NoConcatDataset


def test_concat_samples_are_the_documents_joined_with_eos(
    tokenizer: PreTrainedTokenizerBase, documents: list[str]
) -> None:
    samples = list(ConcatTokensDataset(documents, tokenizer, 64, bos_text="", eos_text=EOS))

    stream = [t for doc in documents for t in [*token_ids(tokenizer, doc), EOS_ID]]
    assert len(samples) == len(stream) // 64
    assert all(s["tokens"].shape == (64,) and s["tokens"].dtype == np.int32 for s in samples)
    assert np.concatenate([s["tokens"] for s in samples]).tolist() == stream[: len(samples) * 64]


def test_concat_puts_bos_before_each_document(
    tokenizer: PreTrainedTokenizerBase, documents: list[str]
) -> None:
    rows = [{"text": doc} for doc in documents]  # rows of a Hugging Face dataset work too
    samples = list(ConcatTokensDataset(rows, tokenizer, 50, bos_text=EOS, eos_text=""))

    stream = [t for doc in documents for t in [EOS_ID, *token_ids(tokenizer, doc)]]
    assert np.concatenate([s["tokens"] for s in samples]).tolist() == stream[: len(samples) * 50]


def test_no_wrap_drops_the_rest_of_a_document(
    tokenizer: PreTrainedTokenizerBase, documents: list[str]
) -> None:
    short = ["a short one", "and another"]
    texts = [*short, *documents]

    wrapped = list(ConcatTokensDataset(texts, tokenizer, 64, eos_text=EOS))
    unwrapped = list(ConcatTokensDataset(texts, tokenizer, 64, eos_text=EOS, no_wrap=True))

    with_eos = [[*token_ids(tokenizer, text), EOS_ID] for text in texts]
    # The short documents share the first sample with the start of the first long one; after
    # that, each long document starts a fresh sample and the rest of it is dropped.
    first = (with_eos[0] + with_eos[1] + with_eos[2])[:64]
    expected = [first] + [ids[:64] for ids in with_eos[3:]]
    assert [s["tokens"].tolist() for s in unwrapped] == expected
    assert len(wrapped) > len(unwrapped)
    assert wrapped[1]["tokens"].tolist() == (with_eos[0] + with_eos[1] + with_eos[2])[64:128]


def test_concat_warns_when_documents_would_run_together(
    tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmfoundry.data.data"):
        ConcatTokensDataset(["x"], tokenizer, 8)
    assert "no separator" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llmfoundry.data.data"):
        ConcatTokensDataset(["x"], tokenizer, 8, eos_text=EOS)
    assert caplog.text == ""


def test_concat_rejects_a_non_positive_length(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ConfigError, match="concat_tokens"):
        ConcatTokensDataset(["x"], tokenizer, 0)


def test_no_concat_yields_texts_and_names_a_row_without_text() -> None:
    assert list(NoConcatDataset(["a", {"text": "b"}])) == [{"text": "a"}, {"text": "b"}]
    with pytest.raises(DatasetError, match="document 1 has no string 'text' field"):
        list(NoConcatDataset([{"text": "a"}, {"body": "b"}]))


# convert_dataset_json


def test_json_converter_writes_tokens_that_read_back_unchanged(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase, documents: list[str]
) -> None:
    source = write_jsonl(
        tmp_path / "docs.jsonl", [{"text": d, "id": i} for i, d in enumerate(documents)]
    )

    summary = convert_dataset_json(
        str(source),
        str(tmp_path / "mds" / "train"),
        "train",
        64,
        str(tokenizer_dir),
        "",
        EOS,
        False,
        "zstd",
    )

    expected = [
        s["tokens"].tolist() for s in ConcatTokensDataset(documents, tokenizer, 64, "", EOS)
    ]
    assert read_tokens(tmp_path / "mds", "train") == expected
    assert (summary.num_samples, summary.num_tokens) == (len(expected), 64 * len(expected))


def test_json_converter_of_an_empty_file_fails_and_leaves_no_split_behind(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    source = write_jsonl(tmp_path / "empty.jsonl", [])
    out = tmp_path / "mds" / "train"
    for _ in range(2):  # the rerun fails the same way, not on a half-written folder
        with pytest.raises(DatasetError, match=r"no samples were written to .*mds/train"):
            convert_dataset_json(str(source), str(out), "train", 8, str(tokenizer_dir))
        assert not out.exists()


def test_json_converter_reads_a_folder_of_files_in_order(
    tmp_path: Path, documents: list[str]
) -> None:
    folder = tmp_path / "json"
    folder.mkdir()
    write_jsonl(folder / "b.jsonl", [{"text": d} for d in documents[2:]])
    write_jsonl(folder / "a.jsonl", [{"text": d} for d in documents[:2]])

    out = str(tmp_path / "mds" / "val")
    convert_dataset_json(str(folder), out, "train", None, None, "", "", False, None)

    dataset = StreamingTextDataset(
        tokenizer=None, max_seq_len=8, local=str(tmp_path / "mds"), split="val"
    )
    texts = [dataset.get_item(i)["text"] for i in range(dataset.num_samples)]
    assert texts == documents


def test_json_converter_names_the_file_and_line_of_a_bad_row(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "rows.jsonl", [{"text": "one"}, {"text": "two"}, {"body": "3"}])
    with pytest.raises(
        DatasetError, match=r"rows\.jsonl:3: row has no 'text' field \(keys: body\)"
    ):
        convert_dataset_json(str(source), str(tmp_path / "mds"), "train", None, None)
    assert not (tmp_path / "mds").exists()  # no half-written output left behind

    source.write_text('{"text": "one"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"rows\.jsonl:2: not valid JSON"):
        convert_dataset_json(str(source), str(tmp_path / "mds"), "train", None, None)


def test_json_converter_names_bad_utf8_and_non_string_text(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b'{"text": "one"}\n\n{"text": "caf\xe9"}\n')
    with pytest.raises(
        DatasetError,
        match=r"rows\.jsonl:3: not valid UTF-8 \(byte 13 of the line\); re-encode the file as "
        r"UTF-8; fix the row, or pass --skip_bad_rows",
    ):
        convert_dataset_json(str(source), str(tmp_path / "mds"), "train", None, None)

    write_jsonl(source, [{"text": "one"}, {"text": ["a", "list"]}])
    with pytest.raises(
        DatasetError, match=r"rows\.jsonl:2: field 'text' must be a string, got list"
    ):
        convert_dataset_json(str(source), str(tmp_path / "mds"), "train", None, None)
    assert not (tmp_path / "mds").exists()


def test_json_converter_skips_and_counts_bad_rows_only_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_bytes(
        b'{"text": "one"}\n{"text": oops}\n\xff\n[1, 2]\n{"body": 1}\n{"text": 5}\n{"text": "two"}\n'
    )

    with caplog.at_level(logging.INFO, logger="llmfoundry"):
        summary = convert_dataset_json(
            str(source), str(tmp_path / "mds"), "train", None, None, skip_bad_rows=True
        )

    dataset = StreamingTextDataset(tokenizer=None, max_seq_len=8, local=str(tmp_path / "mds"))
    assert [dataset.get_item(i)["text"] for i in range(dataset.num_samples)] == ["one", "two"]
    assert summary.rows_read == 7
    assert summary.rows_dropped == {
        "invalid JSON": 1,
        "invalid UTF-8": 1,
        "not a JSON object": 1,
        "missing text field": 1,
        "non-string text field": 1,
    }
    assert "skipping a bad row: " in caplog.text and "rows.jsonl:2: not valid JSON" in caplog.text
    assert (
        "read 7 rows (5 rows dropped: 1 invalid JSON, 1 invalid UTF-8, 1 missing text field, "
        "1 non-string text field, 1 not a JSON object); wrote 2 text samples (not tokenized); "
    ) in caplog.text
    assert summary.bytes_on_disk > 0 and f"on disk in {tmp_path / 'mds'}" in caplog.text


def test_json_converter_errors_name_the_input(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"'.*missing\.jsonl' does not exist"):
        convert_dataset_json(str(tmp_path / "missing.jsonl"), str(tmp_path / "out"), "train")
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": "hello"}])
    with pytest.raises(ConfigError, match="--concat_tokens needs --tokenizer"):
        convert_dataset_json(str(source), str(tmp_path / "out"), "train", concat_tokens=8)
    # The HF converter's rule for the sample options, checked before anything is written.
    with pytest.raises(ConfigError, match="--concat_tokens must be a positive int, got int 0"):
        convert_dataset_json(str(source), str(tmp_path / "out"), "train", concat_tokens=0)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="did you mean 'zstd'"):
        convert_dataset_json(str(source), str(tmp_path / "out"), "train", compression="zstdd")
    with pytest.raises(
        ConfigError, match=r"--split='val': JSON-lines input has only a 'train' split"
    ):
        convert_dataset_json(str(source), str(tmp_path / "out"), "val")


# convert_text_to_mds


def text_to_mds(
    tokenizer_dir: Path,
    out: Path,
    src: Path,
    *,
    concat_tokens: int = 64,
    eos_text: str = EOS,
    compression: str | None = None,
    processes: int = 1,
    reprocess: bool = False,
    use_tokenizer_eos: bool = False,
) -> MDSWriteSummary:
    return convert_text_to_mds(
        str(tokenizer_dir),
        str(out),
        str(src),
        concat_tokens=concat_tokens,
        eos_text=eos_text,
        bos_text="",
        no_wrap=False,
        compression=compression,
        processes=processes,
        reprocess=reprocess,
        use_tokenizer_eos=use_tokenizer_eos,
    )


def test_text_converter_concatenates_the_files_in_order(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase, documents: list[str]
) -> None:
    src = write_text_files(tmp_path / "txt", documents)

    summary = text_to_mds(tokenizer_dir, tmp_path / "mds", src, compression="zstd")

    doc_order = sorted(
        range(len(documents)), key=lambda i: ("nested/" if i % 2 else "") + f"doc{i:02d}"
    )
    ordered = [documents[i] for i in doc_order]
    expected = [s["tokens"].tolist() for s in ConcatTokensDataset(ordered, tokenizer, 64, "", EOS)]
    assert read_tokens(tmp_path / "mds") == expected
    assert summary.num_tokens == 64 * len(expected)
    assert summary.rows_read == len(documents)  # each file is one document
    assert (tmp_path / "mds" / DONE_FILENAME).is_file()


FinishedConversion = tuple[Path, Path, MDSWriteSummary, dict[str, tuple[int, int]]]


@pytest.fixture
def finished_conversion(
    tmp_path: Path, tokenizer_dir: Path, documents: list[str]
) -> FinishedConversion:
    """``documents`` as text files converted to MDS: the source and output folders, the
    conversion's summary and the output's file stamps."""
    src, out = write_text_files(tmp_path / "txt", documents), tmp_path / "mds"
    first = text_to_mds(tokenizer_dir, out, src)
    before = file_stamps(out)
    return src, out, first, before


def test_text_converter_skips_a_finished_conversion(
    finished_conversion: FinishedConversion, tokenizer_dir: Path
) -> None:
    src, out, first, before = finished_conversion

    again = text_to_mds(tokenizer_dir, out, src)

    assert file_stamps(out) == before
    assert again == first


def test_text_converter_needs_reprocess_for_a_different_conversion(
    finished_conversion: FinishedConversion, tokenizer_dir: Path
) -> None:
    src, out, first, before = finished_conversion

    with pytest.raises(ConfigError, match=r"concat_tokens 64 \(now 32\).*pass --reprocess"):
        text_to_mds(tokenizer_dir, out, src, concat_tokens=32)
    assert file_stamps(out) == before

    (src / "extra.txt").write_text("one more document", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"different input files \(1 added.*--reprocess"):
        text_to_mds(tokenizer_dir, out, src)

    redone = text_to_mds(tokenizer_dir, out, src, concat_tokens=32, reprocess=True)
    assert redone.num_samples > first.num_samples
    assert len(read_tokens(out)[0]) == 32
    assert not set(file_stamps(out).items()) & set(before.items())  # every file rewritten


def test_text_converter_will_not_overwrite_unknown_files(
    tmp_path: Path, tokenizer_dir: Path, documents: list[str]
) -> None:
    src, out = write_text_files(tmp_path / "txt", documents), tmp_path / "mds"
    out.mkdir()
    (out / "notes.md").write_text("mine", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"not empty and holds no finished conversion.*--reprocess"
    ):
        text_to_mds(tokenizer_dir, out, src)
    assert (out / "notes.md").read_text(encoding="utf-8") == "mine"


def test_two_processes_write_the_same_folder_as_one(
    tmp_path: Path, tokenizer_dir: Path, corpus_texts: list[str]
) -> None:
    # The workers only tokenize; this process cuts and writes in order: one index, the same
    # shards, whatever the number of processes (wrapping across documents included).
    texts = [text[start : start + 3000] for text in corpus_texts[:3] for start in (0, 3000)]
    src = write_text_files(tmp_path / "txt", texts)

    one = text_to_mds(tokenizer_dir, tmp_path / "one", src, compression="zstd")
    two = text_to_mds(tokenizer_dir, tmp_path / "two", src, compression="zstd", processes=2)

    assert not any(p.is_dir() for p in (tmp_path / "two").iterdir())
    for name in ("index.json", "shard.00000.mds.zstd"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    assert two.num_samples == one.num_samples > 0
    assert two.rows_read == one.rows_read == len(texts)


def test_use_tokenizer_eos_uses_the_tokenizers_eos(
    tmp_path: Path, tokenizer_dir: Path, documents: list[str]
) -> None:
    src = write_text_files(tmp_path / "txt", documents)
    text_to_mds(tokenizer_dir, tmp_path / "a", src, eos_text="", use_tokenizer_eos=True)
    text_to_mds(tokenizer_dir, tmp_path / "b", src, eos_text=EOS)
    assert read_tokens(tmp_path / "a") == read_tokens(tmp_path / "b")
    with pytest.raises(ConfigError, match="--eos_text and --use_tokenizer_eos"):
        text_to_mds(tokenizer_dir, tmp_path / "c", src, use_tokenizer_eos=True)


def test_text_converter_errors_name_the_input(tmp_path: Path, tokenizer_dir: Path) -> None:
    with pytest.raises(MissingFileError, match=r"--input_folder '.*nowhere' does not exist"):
        text_to_mds(tokenizer_dir, tmp_path / "mds", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"holds no \*\.txt files"):
        text_to_mds(tokenizer_dir, tmp_path / "mds", tmp_path / "empty")
    with pytest.raises(ConfigError, match="would delete the input"):
        text_to_mds(tokenizer_dir, tmp_path, tmp_path / "empty")


# the scripts


@pytest.mark.slow  # each script imports torch, transformers and Composer: ~20 s on 2 CPU cores
def test_scripts_report_a_user_error_in_one_line(tmp_path: Path) -> None:
    commands = {
        "convert_dataset_json.py": [
            "--path",
            str(tmp_path / "missing.jsonl"),
            "--out_root",
            str(tmp_path),
        ],
        "convert_text_to_mds.py": [
            "--input_folder",
            str(tmp_path / "missing"),
            "--output_folder",
            str(tmp_path / "mds"),
            "--tokenizer",
            "unused",
            "--concat_tokens",
            "8",
        ],
    }
    # Started together: each spends most of its time importing torch and Composer.
    runs = {
        script: subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "scripts" / "data_prep" / script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script, args in commands.items()
    }
    for script, run in runs.items():
        _, stderr = run.communicate(timeout=300)
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert run.returncode == 2, stderr
        assert "Traceback" not in stderr
        assert len(errors) == 1 and "missing" in errors[0] and "does not exist" in errors[0], script
