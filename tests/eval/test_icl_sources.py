"""Where ICL rows come from: ``hf://`` datasets (``hf_loading_vars``, ``hf_parsing_map``),
object stores (``s3://`` through moto) and local paths (relative to the YAML, missing files)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import pytest
from streaming.base.storage import CloudDownloader
from transformers import PreTrainedTokenizerBase

from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from tests.fixtures import BUCKET

from .helpers import (
    all_prompts,
    icl_dataset,
    icl_evaluators,
    lm_task,
    only_dataset,
    write_jsonl,
)

# --------------------------------------------------------------------------- hf://


HUB_TRAIN = [
    {"question": "What color is the sky?", "options": "red or blue", "label": "blue", "year": 2020},
    {"question": "What color is grass?", "options": "green or pink", "label": "green", "year": 21},
]
HUB_TEST = [{"question": "Snow is?", "options": "white or black", "label": "white", "year": 3}]


@pytest.fixture
def hub_folder(tmp_path: Path) -> Path:
    """A local dataset folder as ``datasets.load_dataset`` reads it: one JSONL file per split."""
    folder = tmp_path / "hub"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", HUB_TRAIN)
    write_jsonl(folder / "test.jsonl", HUB_TEST)
    return folder


PARSING_MAP = {"context": ["question", "options", "year"], "continuation": ["label"]}


def test_hf_parsing_map_joins_columns_with_spaces(
    tmp_path: Path, hub_folder: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    cache = str(tmp_path / "hf-cache")
    task = lm_task(
        f"hf://{hub_folder}",
        hf_loading_vars={"split": "train", "cache_dir": cache},
        hf_parsing_map=PARSING_MAP,
    )
    dataset = only_dataset(task, tokenizer)
    # Only the mapped ICL keys remain; columns are joined with one space (numbers as text).
    assert [dict(row.fields) for row in dataset.rows] == [
        {"context": "What color is the sky? red or blue 2020", "continuation": "blue"},
        {"context": "What color is grass? green or pink 21", "continuation": "green"},
    ]
    assert all_prompts(dataset) == [
        ("", ["What color is the sky? red or blue 2020"], [" blue"]),
        ("", ["What color is grass? green or pink 21"], [" green"]),
    ]
    # hf_loading_vars chooses what is loaded: another split ...
    test_split = only_dataset(
        {**task, "hf_loading_vars": {"split": "test", "cache_dir": cache}}, tokenizer
    )
    assert all_prompts(test_split) == [("", ["Snow is? white or black 3"], [" white"])]
    # ... or a builder with its own data_files.
    json_files = lm_task(
        "hf://json",
        hf_loading_vars={
            "data_files": str(hub_folder / "test.jsonl"),
            "split": "train",
            "cache_dir": cache,
        },
        hf_parsing_map={"context": ["options"], "continuation": ["question", "label"]},
    )
    assert all_prompts(only_dataset(json_files, tokenizer)) == [
        ("", ["white or black"], [" Snow is? white"])
    ]


def test_hf_parsing_map_with_a_missing_column_names_it(
    tmp_path: Path, hub_folder: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    task = lm_task(
        f"hf://{hub_folder}",
        hf_loading_vars={"split": "train", "cache_dir": str(tmp_path / "hf-cache")},
        hf_parsing_map={"context": ["question", "passage"], "continuation": ["label"]},
    )
    with pytest.raises(DatasetError) as err:
        icl_evaluators([task], tokenizer)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"hf://{hub_folder}, row 1: hf_parsing_map names column(s) ['passage']"
    )
    assert "(columns: ['label', 'options', 'question', 'year'])" in message


def test_hf_dataset_without_a_split_asks_for_one(
    tmp_path: Path, hub_folder: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    task = lm_task(
        f"hf://{hub_folder}",
        hf_loading_vars={"cache_dir": str(tmp_path / "hf-cache")},
        hf_parsing_map=PARSING_MAP,
    )
    with pytest.raises(ConfigError) as err:
        icl_evaluators([task], tokenizer)
    assert str(err.value) == (
        f"icl task 'lm': hf://{hub_folder} loaded as DatasetDict; choose one split with "
        "hf_loading_vars: {split: <name>}"
    )


# --------------------------------------------------------------------------- s3://


LM_ROWS = [{"context": f"ctx{i}", "continuation": f" cont{i}"} for i in range(4)]


def test_s3_dataset_uri_gives_the_local_rows_and_downloads_once(
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    local = write_jsonl(tmp_path / "lm.jsonl", LM_ROWS)
    s3.upload_file(local, BUCKET, "icl/lm.jsonl")
    uri = f"s3://{BUCKET}/icl/lm.jsonl"
    # The per-node cache lives under the temp folder; give this test its own.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    fetched: list[str] = []
    get = CloudDownloader.get

    def counting_get(remote_dir: str | None = None) -> Any:
        fetched.append(str(remote_dir))
        return get(remote_dir)

    monkeypatch.setattr(CloudDownloader, "get", counting_get)

    # Two tasks on the same object, two shot counts each: four evaluators, one download.
    tasks = [
        lm_task(uri, num_fewshot=[0, 1]),
        {**lm_task(uri, num_fewshot=[0, 1]), "label": "again", "continuation_delimiter": ":"},
    ]
    remote = icl_evaluators(tasks, tokenizer)
    assert fetched == [uri]
    from_disk = icl_evaluators([lm_task(local, num_fewshot=[0, 1])], tokenizer)
    for remote_eval, local_eval in zip(remote[:2], from_disk, strict=True):
        remote_set, local_set = icl_dataset(remote_eval), icl_dataset(local_eval)
        assert [dict(r.fields) for r in remote_set.rows] == LM_ROWS
        assert all_prompts(remote_set) == all_prompts(local_set)
    digest = hashlib.sha1(uri.encode()).hexdigest()[:16]
    cached = tmp_path / "tmp" / "llmfoundry-icl" / f"{digest}-lm.jsonl"
    assert cached.read_bytes() == Path(local).read_bytes()
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name]  # no .partial left


# --------------------------------------------------------------------------- local paths


def test_missing_local_file_names_it_and_the_download_command(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    benchmark = "eval/local_data/commonsense_reasoning/piqa.jsonl"
    with pytest.raises(MissingFileError) as err:
        icl_evaluators([{**lm_task(benchmark), "label": "piqa"}], tokenizer)
    assert str(err.value) == (
        f"icl task 'piqa': dataset_uri '{benchmark}' does not exist; fetch LLM Foundry's "
        "benchmark files with: llmfoundry eval download-data (or python "
        "scripts/eval/download_eval_data.py) --suite all"
    )
    with pytest.raises(MissingFileError) as err:
        icl_evaluators([lm_task("data/mine.jsonl")], tokenizer)
    assert str(err.value) == (
        "icl task 'lm': dataset_uri 'data/mine.jsonl' does not exist; point dataset_uri at a "
        "JSONL file (relative paths: the working directory, then the YAML's folders)"
    )


def test_relative_dataset_uri_is_found_from_the_tasks_yaml_folder_and_its_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer: PreTrainedTokenizerBase
) -> None:
    # LLM Foundry's layout: scripts/eval/yamls/tasks.yaml names eval/local_data/x.jsonl, which
    # is scripts/eval/local_data/x.jsonl (its users run from scripts/).
    repo = tmp_path / "repo"
    (repo / "scripts/eval/yamls").mkdir(parents=True)
    (repo / "scripts/eval/local_data").mkdir(parents=True)
    write_jsonl(repo / "scripts/eval/local_data/lm.jsonl", LM_ROWS[:2])
    tasks = repo / "scripts/eval/yamls/tasks.yaml"
    tasks.write_text(
        "icl_tasks:\n- {label: lm, dataset_uri: eval/local_data/lm.jsonl, "
        "icl_task_type: language_modeling}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    dataset = icl_dataset(icl_evaluators(str(tasks), tokenizer)[0])
    assert [r.fields["context"] for r in dataset.rows] == ["ctx0", "ctx1"]
    assert dataset.rows[0].source == "eval/local_data/lm.jsonl"

    # The same relative path in the working directory wins (LLM Foundry's lookup).
    (elsewhere / "eval/local_data").mkdir(parents=True)
    write_jsonl(elsewhere / "eval/local_data/lm.jsonl", [{"context": "cwd", "continuation": " c"}])
    dataset = icl_dataset(icl_evaluators(str(tasks), tokenizer)[0])
    assert [r.fields["context"] for r in dataset.rows] == ["cwd"]

    # An inline task list is anchored at the run YAML's folder (the ``anchors``).
    monkeypatch.chdir(tmp_path)
    inline = [lm_task("eval/local_data/lm.jsonl")]
    with pytest.raises(MissingFileError):
        icl_evaluators(inline, tokenizer)
    dataset = icl_dataset(
        icl_evaluators(inline, tokenizer, anchors=[repo / "scripts/eval/yamls"])[0]
    )
    assert [r.fields["context"] for r in dataset.rows] == ["ctx0", "ctx1"]
