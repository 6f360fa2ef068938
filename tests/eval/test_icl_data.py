"""ICL data: few-shot prompts (other rows only, fixed by the seed), truncation and microbatch
splitting, and one-line errors that name the file, row and field (or the config key)."""

from __future__ import annotations

import re
from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry.eval import build_icl_evaluators, split_icl_batch
from llmfoundry.eval.datasets import icl_num_samples
from llmfoundry.utils.exceptions import ConfigError, DatasetError

from .helpers import icl_dataset, icl_loader, lm_task, write_jsonl

LM_ROWS = [{"context": f"ctx{i}", "continuation": f" cont{i}"} for i in range(6)]


def _batches(task: dict[str, Any], tokenizer: PreTrainedTokenizerBase, **kw: Any) -> list[dict]:
    evaluators, _ = build_icl_evaluators(
        [task], tokenizer, kw.pop("seq", 64), kw.pop("bs", 2), **kw
    )
    assert len(evaluators) == 1
    return list(icl_loader(evaluators[0]))


def test_fewshot_prompts_hold_k_other_rows_and_follow_the_seed(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    task = lm_task(
        write_jsonl(tmp_path / "lm.jsonl", LM_ROWS), num_fewshot=[2], continuation_delimiter=" ->"
    )

    def preambles(**change: Any) -> list[str]:
        evaluators, _ = build_icl_evaluators([{**task, **change}], tokenizer, 64, 2)
        dataset = icl_dataset(evaluators[0])
        return [dataset.prompt_texts(i)[0] for i in range(len(dataset))]

    first = preambles()
    for i, preamble in enumerate(first):
        shots = re.findall(r"ctx(\d) ->cont(\d)", preamble)
        assert len(shots) == 2 and all(a == b for a, b in shots)
        assert str(i) not in {a for a, _ in shots}  # never the row itself
    assert preambles() == first  # the same seed gives the same shots
    assert preambles(fewshot_random_seed=99) != first


def test_context_is_cut_from_the_left_and_continuation_kept(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    rows = [{"context": "word " * 60 + "end", "continuation": " cont0"}, *LM_ROWS[1:3]]
    task = lm_task(write_jsonl(tmp_path / "lm.jsonl", rows))
    batch = _batches(task, tokenizer, seq=16, bs=3)[0]
    continuation_ids = tokenizer(" cont0", add_special_tokens=False)["input_ids"]
    assert batch["attention_mask"][0].sum() == 16  # exactly max_seq_len
    start = int(batch["continuation_indices"][0][0])
    assert batch["input_ids"][0, start:16].tolist() == continuation_ids
    # The context is right-stripped; the space starts the continuation (" cont0").
    assert str(tokenizer.decode(batch["input_ids"][0, :start])).endswith("word end")
    # shorter rows are right-padded with the pad id and masked out
    short = int(batch["attention_mask"][1].sum())
    assert (batch["input_ids"][1, short:] == tokenizer.pad_token_id).all()


def test_multiple_choice_batches_count_questions_and_split_keeps_them_whole(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    rows = [
        {"query": "q0", "choices": [" a", " b", " c"], "gold": 2},
        {"query": "q1", "choices": [" a", " b"], "gold": 0},
        {"query": "q2", "choices": [" a", " b", " c", " d"], "gold": 3},
    ]
    task = {
        "label": "mc",
        "dataset_uri": write_jsonl(tmp_path / "mc.jsonl", rows),
        "icl_task_type": "multiple_choice",
    }
    # batch_size counts rows, as in LLM Foundry: 9 rows // 3 choices (first row) = 3 questions.
    batch = _batches(task, tokenizer, bs=9)[0]
    assert batch["mode"] == "icl_task"
    assert batch["input_ids"].shape[0] == 9  # one row per choice
    assert batch["choice_groupings"] == [(0, 3), (3, 5), (5, 9)]
    assert batch["gold_indices"] == [2, 0, 3]
    assert icl_num_samples(batch) == 3
    first, second = split_icl_batch(batch, 2)
    assert first["choice_groupings"] == [(0, 3), (3, 5)] and first["gold_indices"] == [2, 0]
    assert second["choice_groupings"] == [(0, 4)] and second["gold_indices"] == [3]
    assert first["input_ids"].shape[0] == 5 and second["input_ids"].shape[0] == 4
    assert torch.equal(second["input_ids"], batch["input_ids"][5:])
    assert [icl_num_samples(b) for b in (first, second)] == [2, 1]


def test_generation_batches_left_pad_and_carry_answers(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    rows = [
        {"context": "a much longer question here", "answer": "Paris", "aliases": ["paris fr"]},
        {"context": "short", "answer": "Rome"},
    ]
    task = {
        "label": "qa",
        "dataset_uri": write_jsonl(tmp_path / "qa.jsonl", rows),
        "icl_task_type": "question_answering",  # the older name of the type
        "generation_kwargs": {"temperature": 1.0},
    }
    batch = _batches(task, tokenizer)[0]
    assert batch["mode"] == "generate"
    assert batch["labels"] == [["Paris", "paris fr"], ["Rome"]]
    mask = batch["attention_mask"]
    assert mask[1, 0] == 0 and mask[1, -1] == 1 and mask[0].all()  # left padding
    longest = max(
        len(tokenizer(a, add_special_tokens=False)["input_ids"])
        for a in ("Paris", "paris fr", "Rome")
    )
    kwargs = batch["generation_kwargs"]
    assert kwargs["max_new_tokens"] == longest
    assert kwargs["pad_token_id"] == tokenizer.pad_token_id
    assert kwargs["eos_token_id"] == tokenizer.eos_token_id
    assert kwargs["temperature"] == 1.0
    halves = split_icl_batch(batch, 1)
    assert [h["labels"] for h in halves] == [[["Paris", "paris fr"]], [["Rome"]]]
    assert all(h["generation_kwargs"] == kwargs for h in halves)


def test_categories_make_one_evaluator_each(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    rows = [{**row, "category": "even" if i % 2 == 0 else "odd"} for i, row in enumerate(LM_ROWS)]
    task = lm_task(
        write_jsonl(tmp_path / "lm.jsonl", rows), num_fewshot=[0, 1], has_categories=True
    )
    evaluators, keys = build_icl_evaluators([task], tokenizer, 64, 2)
    assert [e.label for e in evaluators] == [
        "lm/0-shot/even",
        "lm/0-shot/odd",
        "lm/1-shot/even",
        "lm/1-shot/odd",
    ]
    assert keys[0] == "metrics/lm/0-shot/even/InContextLearningLMAccuracy"
    assert len(cast(Sized, icl_loader(evaluators[0]).dataset)) == 3


def test_tasks_load_from_a_yaml_file(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    data = write_jsonl(tmp_path / "lm.jsonl", LM_ROWS)
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(
        f"icl_tasks:\n- label: lm\n  dataset_uri: {data}\n  num_fewshot: [0, 3]\n"
        "  icl_task_type: language_modeling\n  batch_size: 5\n"
    )
    evaluators, keys = build_icl_evaluators(str(tasks), tokenizer, 64, 2)
    assert [e.label for e in evaluators] == ["lm/0-shot", "lm/3-shot"]
    assert icl_loader(evaluators[0]).batch_size == 5
    assert keys == [
        "metrics/lm/0-shot/InContextLearningLMAccuracy",
        "metrics/lm/3-shot/InContextLearningLMAccuracy",
    ]


BAD_MC = [
    (
        {"query": "q", "gold": 0},
        r"mc\.jsonl, row 2: missing field 'choices'",
    ),
    (
        {"query": "q", "choices": [" a", " b"], "gold": 2},
        r"mc\.jsonl, row 2, field 'gold': gold=2 is out of range for 2 choices",
    ),
    (
        {"query": "q", "choices": [], "gold": 0},
        r"mc\.jsonl, row 2, field 'choices': the list is empty",
    ),
]


@pytest.mark.parametrize(("bad_row", "message"), BAD_MC)
def test_bad_rows_name_file_row_and_field(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, bad_row: dict, message: str
) -> None:
    good = {"query": "q", "choices": [" a", " b"], "gold": 1}
    path = tmp_path / "mc.jsonl"
    task = {
        "label": "mc",
        "dataset_uri": write_jsonl(path, [good, bad_row, good]),
        "icl_task_type": "multiple_choice",
    }
    with pytest.raises(DatasetError, match=message) as err:
        build_icl_evaluators([task], tokenizer, 64, 2)
    assert "\n" not in str(err.value)


def test_more_shots_than_rows_uses_every_other_row(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    task = lm_task(write_jsonl(tmp_path / "lm.jsonl", LM_ROWS), num_fewshot=[6])
    evaluators, _ = build_icl_evaluators([task], tokenizer, 256, 2)
    dataset = icl_dataset(evaluators[0])
    for i in range(len(LM_ROWS)):
        assert len(re.findall(r"ctx\d", dataset.prompt_texts(i)[0])) == len(LM_ROWS) - 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"num_fewshots": [0]},
            r"icl_tasks\[1\]\.num_fewshots is not a valid key; did you mean 'num_fewshot'",
        ),
        (
            {"icl_task_type": "multiple_choise"},
            r"icl_tasks\[1\]\.icl_task_type .*did you mean 'multiple_choice'",
        ),
        ({"metric_names": ["InContextLearningMCAccuracy"]}, r"icl_tasks\[1\]\.metric_names"),
        ({"label": None}, r"icl_tasks\[1\]\.label is missing"),
        ({"num_beams": 4}, r"icl_tasks\[1\]\.num_beams .* use generation_kwargs\.num_beams"),
        (
            {"prelimiter": "Q:", "question_prelimiter": "Q:"},
            r"icl_tasks\[1\] sets both prelimiter and question_prelimiter",
        ),
    ],
)
def test_bad_task_keys_name_the_key(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, change: dict, message: str
) -> None:
    good = lm_task(write_jsonl(tmp_path / "lm.jsonl", LM_ROWS))
    with pytest.raises(ConfigError, match=message):
        build_icl_evaluators([good, {**good, **change}], tokenizer, 64, 2)
