"""SIGKILL during each converter, then the same command again: the rerun finishes with the bytes
of a clean run, and the killed run left nothing that passes for a finished dataset.

Each kill lands after a shard file is on disk and before ``index.json`` is written
(``MiniMDSWriter.flush_shard`` returns, then the process is killed): the state most easily taken
for a dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import folder_bytes, run_killed

AFTER_FIRST_SHARD = ("llmfoundry.data.mds_writer:MiniMDSWriter.flush_shard", 1, "after")


def write_rows(path: Path, texts: list[str]) -> Path:
    """One JSON-lines row per paragraph of ``texts``."""
    with path.open("w", encoding="utf-8") as out:
        for text in texts:
            for paragraph in text.split("\n\n"):
                out.write(json.dumps({"text": paragraph}) + "\n")
    return path


def assert_nothing_looks_done(root: Path) -> None:
    """No ``index.json`` under ``root`` outside hidden staging folders (``.<name>.partial-*``,
    which the next run removes): no dataset a loader would open."""
    found = [p.relative_to(root).parts for p in root.rglob("index.json")]
    assert [parts for parts in found if not any(n.startswith(".") for n in parts)] == []


@pytest.mark.slow
def test_convert_dataset_json_killed_then_rerun(
    tmp_path: Path, corpus_texts: list[str], tokenizer_dir: Path
) -> None:
    from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json

    rows = write_rows(tmp_path / "rows.jsonl", corpus_texts)
    out = tmp_path / "out" / "train"
    options = ["--concat_tokens", "64", "--tokenizer", str(tokenizer_dir), "--num_workers", "0"]
    run_killed(
        *AFTER_FIRST_SHARD,
        "data_prep/convert_dataset_json.py",
        "--path",
        str(rows),
        "--out_root",
        str(out),
        *options,
    )
    assert_nothing_looks_done(tmp_path / "out")

    clean = tmp_path / "clean"
    for folder in (out, clean):  # the same command again, not killed; and a clean run
        convert_dataset_json(
            str(rows), str(folder), concat_tokens=64, tokenizer=str(tokenizer_dir), num_workers=0
        )
    assert folder_bytes(out) == folder_bytes(clean)
    assert sorted(folder_bytes(out)) == ["index.json", "shard.00000.mds"]


@pytest.mark.slow
def test_convert_text_to_mds_killed_then_rerun(
    tmp_path: Path, corpus_texts: list[str], tokenizer_dir: Path
) -> None:
    from llmfoundry.command_utils.data_prep.convert_text_to_mds import (
        DONE_FILENAME,
        convert_text_to_mds,
    )

    texts = tmp_path / "texts"
    texts.mkdir()
    for n, text in enumerate(corpus_texts):
        (texts / f"{n}.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    run_killed(
        *AFTER_FIRST_SHARD,
        "data_prep/convert_text_to_mds.py",
        "--input_folder",
        str(texts),
        "--output_folder",
        str(out),
        "--concat_tokens",
        "64",
        "--tokenizer",
        str(tokenizer_dir),
        "--processes",
        "1",
    )
    assert_nothing_looks_done(tmp_path)
    assert not list(tmp_path.rglob(DONE_FILENAME))

    convert_text_to_mds(str(tokenizer_dir), str(out), str(texts), 64, processes=1)
    clean = tmp_path / "clean"
    convert_text_to_mds(str(tokenizer_dir), str(clean), str(texts), 64, processes=1)
    done, clean_files = folder_bytes(out), folder_bytes(clean)
    assert json.loads(done.pop(DONE_FILENAME)) == json.loads(clean_files.pop(DONE_FILENAME))
    assert done == clean_files
    assert sorted(done) == ["index.json", "shard.00000.mds.zstd"]


@pytest.mark.slow
def test_convert_finetuning_dataset_killed_in_second_split_keeps_the_first(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    from llmfoundry.command_utils.data_prep.convert_finetuning_dataset import (
        convert_finetuning_dataset,
    )

    data = tmp_path / "data"
    data.mkdir()
    for split, count in (("train", 300), ("validation", 100)):
        with (data / f"{split}.jsonl").open("w") as out:
            for n in range(count):
                row = {
                    "prompt": f"{split} question {n}: what is {n} + {n}?",
                    "response": f"{2 * n}",
                }
                out.write(json.dumps(row) + "\n")
    out = tmp_path / "out"
    # The first shard flushed is train's whole split; the kill lands in validation's.
    run_killed(
        "llmfoundry.data.mds_writer:MiniMDSWriter.flush_shard",
        2,
        "after",
        "data_prep/convert_finetuning_dataset.py",
        "--dataset",
        str(data),
        "--out_root",
        str(out),
        "--tokenizer",
        str(tokenizer_dir),
        "--max_seq_len",
        "64",
        "--num_workers",
        "0",
    )
    # Each split is renamed into place when whole: train is finished, validation absent.
    visible = [p for p in out.rglob("*") if not any(n[0] == "." for n in p.relative_to(out).parts)]
    assert sorted(p.relative_to(out).as_posix() for p in visible) == [
        "train",
        "train/index.json",
        "train/shard.00000.mds",
    ]

    # The rerun converts the split that is missing (the whole command would refuse the
    # non-empty out/train, naming it).
    convert_finetuning_dataset(
        str(data),
        str(out),
        str(tokenizer_dir),
        splits=["validation"],
        max_seq_len=64,
        num_workers=0,
    )
    clean = tmp_path / "clean"
    convert_finetuning_dataset(
        str(data), str(clean), str(tokenizer_dir), max_seq_len=64, num_workers=0
    )
    assert folder_bytes(out) == folder_bytes(clean)
    assert sorted(folder_bytes(out)) == [
        "train/index.json",
        "train/shard.00000.mds",
        "validation/index.json",
        "validation/shard.00000.mds",
    ]


@pytest.mark.slow
def test_convert_dataset_hf_json_builder_killed_then_rerun(
    tmp_path: Path, corpus_texts: list[str], tokenizer_dir: Path
) -> None:
    from llmfoundry.command_utils.data_prep.convert_dataset_hf import convert_dataset_hf

    rows = write_rows(tmp_path / "rows.jsonl", corpus_texts)
    out = tmp_path / "out"
    run_killed(
        *AFTER_FIRST_SHARD,
        "data_prep/convert_dataset_hf.py",
        "--dataset",
        "json",
        "--data_files",
        str(rows),
        "--splits",
        "train",
        "--out_root",
        str(out),
        "--concat_tokens",
        "64",
        "--tokenizer",
        str(tokenizer_dir),
        "--num_workers",
        "0",
    )
    assert_nothing_looks_done(tmp_path)

    clean = tmp_path / "clean"
    for folder in (out, clean):  # the same command again, not killed; and a clean run
        convert_dataset_hf(
            "json",
            str(folder),
            splits=["train"],
            data_files=[str(rows)],
            concat_tokens=64,
            tokenizer=str(tokenizer_dir),
            num_workers=0,
        )
    assert folder_bytes(out) == folder_bytes(clean)
    assert sorted(folder_bytes(out)) == ["train/index.json", "train/shard.00000.mds"]
