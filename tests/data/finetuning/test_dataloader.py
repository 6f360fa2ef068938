"""The ``finetuning`` data loader end to end: HF JSON and MDS sources, config and data errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from streaming import MDSWriter
from streaming.base.util import clean_stale_shared_memory
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.data.finetuning import build_finetuning_dataloader, dataset_constructor
from llmfoundry.data.finetuning.collator import IGNORE_INDEX
from llmfoundry.utils.builders import build_dataloader_from_section
from llmfoundry.utils.exceptions import ConfigError, DatasetError

EOS, PAD = 0, 1
X = IGNORE_INDEX
ROWS = [
    {"prompt": "def loads(s):", "response": " return decode(s)"},
    {"prompt": "import json", "response": "\nimport re"},
    {"prompt": "class Encoder:", "response": "\n    pass"},
    {"prompt": "x = [", "response": "1, 2, 3]"},
    {"prompt": "while True:", "response": "\n    break"},
    {"prompt": "if not s:", "response": "\n    return None"},
]


@pytest.fixture(autouse=True, scope="module")
def _clean_shared_memory() -> None:
    clean_stale_shared_memory()


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def json_dataset(tmp_path: Path, rows: Sequence[Mapping[str, Any]], **overrides: Any) -> dict:
    """A ``dataset:`` section reading ``rows`` from a local JSONL file, as a YAML would."""
    data_file = write_jsonl(tmp_path / "train.jsonl", rows)
    section = {
        "hf_name": "json",
        "hf_kwargs": {"data_files": {"train": str(data_file)}, "cache_dir": str(tmp_path / "hf")},
        "split": "train",
        "preprocessing_fn": None,
        "max_seq_len": 32,
        "allow_pad_trimming": False,
        "decoder_only_format": True,
        "shuffle": False,
        "target_prompts": "none",
        "target_responses": "last",
        "packing_ratio": None,
    }
    return {**section, **overrides}


def ids(tokenizer: PreTrainedTokenizerBase, text: str, special: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


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


def test_unknown_dataset_key_suggests_the_right_one(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    dataset = json_dataset(tmp_path, ROWS, max_seq_length=32)
    with pytest.raises(
        ConfigError,
        match=r"train_loader\.dataset\.max_seq_length is not a valid key; did you mean 'max_seq_len'",
    ):
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
    # A row the function fails on (JSON loading fills the missing field with None) is named.
    write_jsonl(tmp_path / "train.jsonl", [*rows, {"q": "no answer"}])
    with pytest.raises(
        DatasetError, match=r"row 2: preprocessing function question_answer failed \(TypeError"
    ):
        build_finetuning_dataloader(tokenizer, 2, dataset)


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
    collate_fn: Any = spec.dataloader.collate_fn  # type: ignore[attr-defined]
    assert seen + len(collate_fn.leftovers) == 24


def test_auto_packing_ratio(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = json_dataset(tmp_path, ROWS * 10, packing_ratio="auto", max_seq_len=64)
    with caplog.at_level(logging.INFO, logger="llmfoundry.data.finetuning"):
        spec = build_finetuning_dataloader(tokenizer, 2, dataset)
    assert "packing_ratio: auto chose" in caplog.text
    batch_size = spec.dataloader.batch_size  # type: ignore[attr-defined]
    assert batch_size is not None and batch_size > 2
    assert "sequence_id" in next(iter(spec.dataloader))


def write_mds(folder: Path, columns: dict[str, str], samples: Sequence[Mapping[str, Any]]) -> None:
    with MDSWriter(out=str(folder), columns=columns) as writer:
        for sample in samples:
            writer.write(dict(sample))


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


# --- MDS `turns` column (tokenized multi-turn chats) ---

CHATS = [
    [{"input_ids": [5, 6], "labels": [7, 8]}, {"input_ids": [9], "labels": [10, EOS]}],
    [{"input_ids": [11], "labels": [12, EOS]}],
]


def test_mds_turns_column_reads_multi_turn_chats(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    write_mds(tmp_path / "mds", {"turns": "json"}, [{"turns": chat} for chat in CHATS])
    dataset = {
        "local": str(tmp_path / "mds"),
        "max_seq_len": 8,
        "shuffle": False,
        "target_responses": "all",
    }
    batch = next(iter(build_finetuning_dataloader(tokenizer, 2, dataset).dataloader))
    assert batch["input_ids"].tolist() == [
        [5, 6, 7, 8, 9, 10, EOS, PAD],
        [11, 12, EOS] + [PAD] * 5,
    ]
    # Both responses of the chat are targets (target_responses: all), its prompts are not.
    assert batch["labels"].tolist() == [[X, X, 7, 8, X, 10, EOS, X], [X, 12, EOS] + [X] * 5]
    last_only = {**dataset, "target_responses": "last"}
    batch = next(iter(build_finetuning_dataloader(tokenizer, 2, last_only).dataloader))
    assert batch["labels"][0].tolist() == [X, X, X, X, X, 10, EOS, X]


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([], r"MDS sample 1: column 'turns' must be a non-empty list .* got an empty list"),
        ({"input_ids": [1]}, r"MDS sample 1: column 'turns' must be a non-empty list .* got dict"),
        (
            [{"input_ids": [5], "labels": [6]}, {"input_ids": [5], "response": [6]}],
            r"MDS sample 1: turn 1 of column 'turns' must be a dict with exactly 'input_ids' "
            r"and 'labels', got keys \['input_ids', 'response'\]",
        ),
        (
            [{"input_ids": [5, "x"], "labels": [6]}],
            r"MDS sample 1: turn 0 'input_ids' of column 'turns' must be a list of non-negative",
        ),
        (
            [{"input_ids": [5], "labels": [-1]}],
            r"MDS sample 1: turn 0 'labels' of column 'turns' must be a list of non-negative",
        ),
        (
            [{"input_ids": [5], "labels": []}],
            r"MDS sample 1: turn 0 of column 'turns' has empty 'labels'",
        ),
    ],
)
def test_malformed_turns_name_the_sample_and_the_problem(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, turns: Any, message: str
) -> None:
    write_mds(tmp_path / "mds", {"turns": "json"}, [{"turns": CHATS[1]}, {"turns": turns}])
    dataset = {"local": str(tmp_path / "mds"), "max_seq_len": 8, "shuffle": False}
    loader = build_finetuning_dataloader(tokenizer, 2, dataset).dataloader
    with pytest.raises(DatasetError, match=message) as error:
        next(iter(loader))
    assert "\n" not in str(error.value)


# --- MDS truncation accounting ---


def test_mds_truncation_and_untrainable_examples_are_counted_and_logged(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    def sample(prompt_len: int, response_len: int) -> dict[str, np.ndarray]:
        return {
            "input_ids": np.arange(10, 10 + prompt_len, dtype=np.int32),
            "labels": np.arange(100, 100 + response_len, dtype=np.int32),
        }

    samples = [
        sample(2, 2),  # fits
        sample(3, 9),  # 12 tokens: truncated to 8, keeps 5 response tokens
        sample(8, 2),  # the prompt fills max_seq_len: truncated, no target left
        sample(1, 3),  # fits
    ]
    write_mds(tmp_path / "mds", {"input_ids": "ndarray:int32", "labels": "ndarray:int32"}, samples)
    dataset = {
        "local": str(tmp_path / "mds"),
        "max_seq_len": 8,
        "shuffle": False,
        # No prompt here is 9 tokens long, so an example whose response is cut away has no
        # target left.
        "target_prompts": "length>=9",
    }
    spec = build_finetuning_dataloader(tokenizer, 2, dataset)
    with caplog.at_level(logging.INFO, logger="llmfoundry.data.finetuning"):
        batches = list(spec.dataloader)
    assert len(batches) == 2
    untrainable_row = batches[1]["labels"][0]
    assert batches[1]["input_ids"][0].tolist() == list(range(10, 18))
    assert untrainable_row.eq(IGNORE_INDEX).all()  # kept as a row, fully masked
    assert batches[0]["labels"][1].tolist() == [X, X, X, 100, 101, 102, 103, 104]
    # The fitting examples' responses end with the tokenizer's EOS, appended when read.
    assert batches[0]["labels"][0].tolist() == [X, X, 100, 101, EOS, X, X, X]
    collator: Any = spec.dataloader.collate_fn  # type: ignore[attr-defined]
    stats = collator.stats
    assert (stats.examples, stats.truncated, stats.untrainable) == (4, 2, 1)
    messages = [r.getMessage() for r in caplog.records if "finetuning examples" in r.getMessage()]
    assert messages[0].startswith(
        "MDS finetuning examples: 1 of 2 collated so far (1 batches) were longer than "
        "max_seq_len=8 and truncated; 0 had no target token"
    )
    assert messages[-1].startswith("MDS finetuning examples: 2 of 4 collated so far (2 batches)")
    assert "1 had no target token" in messages[-1]
    assert len(messages) == 2


def test_hf_examples_are_not_counted_again_when_collated(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    spec = build_finetuning_dataloader(tokenizer, 2, json_dataset(tmp_path, ROWS))
    collator: Any = spec.dataloader.collate_fn  # type: ignore[attr-defined]
    assert collator.stats is None  # counted (and filtered) once, when the dataset was built


# --- streams, eval_loader ---


def id_samples(first_id: int, count: int) -> list[dict[str, np.ndarray]]:
    """Single-turn samples whose prompt is one id, ``first_id + i``, naming the sample."""
    return [
        {
            "input_ids": np.asarray([first_id + i], np.int32),
            "labels": np.asarray([7, EOS], np.int32),
        }
        for i in range(count)
    ]


def test_streams_mix_two_mds_folders_in_their_proportions(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    columns = {"input_ids": "ndarray:int32", "labels": "ndarray:int32"}
    write_mds(tmp_path / "a" / "train", columns, id_samples(100, 20))
    write_mds(tmp_path / "b" / "train", columns, id_samples(300, 20))
    dataset = {
        "max_seq_len": 8,
        "shuffle": True,
        "epoch_size": 40,
        "streams": {
            "a": {"local": str(tmp_path / "a"), "split": "train", "proportion": 0.75},
            "b": {"local": str(tmp_path / "b"), "split": "train", "proportion": 0.25},
        },
    }
    spec = build_finetuning_dataloader(tokenizer, 4, dataset, drop_last=False)
    first_ids = [int(i) for batch in spec.dataloader for i in batch["input_ids"][:, 0]]
    from_a = [i for i in first_ids if 100 <= i < 120]
    from_b = [i for i in first_ids if 300 <= i < 320]
    # floor(40 x 0.75) = 30 from a (its 20 samples, 10 of them twice), 10 from b (no repeats).
    assert (len(from_a), len(from_b)) == (30, 10)
    assert len(first_ids) == 40
    assert set(from_a) == set(range(100, 120))
    assert len(set(from_b)) == 10


def test_eval_loader_messages_name_eval_loader(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    with pytest.raises(ConfigError, match=r"^eval_loader\.dataset\.max_seq_length is not a valid"):
        build_finetuning_dataloader(
            tokenizer, 2, json_dataset(tmp_path, ROWS, max_seq_length=8), section="eval_loader"
        )
    with pytest.raises(ConfigError, match=r"^eval_loader\.dataset\.max_leftover_bins_to_keep "):
        build_finetuning_dataloader(
            tokenizer,
            2,
            json_dataset(tmp_path, ROWS, max_leftover_bins_to_keep=-1),
            section="eval_loader",
        )
    rows = [*ROWS[:2], {"prompt": "a", "response": ""}]
    with pytest.raises(DatasetError, match=r"row 2: field 'response' is empty"):
        build_finetuning_dataloader(
            tokenizer, 2, json_dataset(tmp_path, rows), section="eval_loader"
        )


@pytest.mark.parametrize("source", ["hf", "mds"])
def test_eval_loader_without_drop_last_keeps_the_last_partial_batch(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, source: str
) -> None:
    rows = ROWS[:5]
    if source == "hf":
        dataset = json_dataset(tmp_path, rows)
    else:
        write_mds(tmp_path / "mds", {"prompt": "str", "response": "str"}, rows)
        dataset = {"local": str(tmp_path / "mds"), "max_seq_len": 32, "shuffle": False}
    loader = build_finetuning_dataloader(
        tokenizer, 2, dataset, drop_last=False, section="eval_loader"
    ).dataloader
    sizes = [batch["input_ids"].shape[0] for batch in loader]
    assert sizes == [2, 2, 1]
    loader = build_finetuning_dataloader(tokenizer, 2, dataset, drop_last=True).dataloader
    assert [batch["input_ids"].shape[0] for batch in loader] == [2, 2]


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
        ({"safe_load": "yes"}, r"train_loader\.dataset\.safe_load must be true or false"),
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


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_max_leftover_bins_to_keep_is_validated(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, value: Any
) -> None:
    dataset = json_dataset(tmp_path, ROWS, packing_ratio=2, max_leftover_bins_to_keep=value)
    with pytest.raises(
        ConfigError,
        match=r"train_loader\.dataset\.max_leftover_bins_to_keep is .*; use a whole number >= 0",
    ):
        build_finetuning_dataloader(tokenizer, 2, dataset)


def test_max_leftover_bins_to_keep_reaches_the_packer(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    dataset = json_dataset(tmp_path, ROWS * 4, packing_ratio=3, max_leftover_bins_to_keep=0)
    spec = build_finetuning_dataloader(tokenizer, 2, dataset)
    collate_fn: Any = spec.dataloader.collate_fn  # type: ignore[attr-defined]
    assert collate_fn.max_leftover_bins_to_keep == 0
    seen = sum(int((b["sequence_id"].amax(dim=1) + 1).sum()) for b in spec.dataloader)
    assert collate_fn.leftovers == []  # nothing is carried over
    assert collate_fn.discarded_examples > 0  # (without the key, some would be)
    assert seen + collate_fn.discarded_examples == 24
