"""The exact prompts of every ICL task type, pinned on hand-made rows (LLM Foundry 0.22's layout).

Four rows and ``num_fewshot: 2`` with the default seed draw these shots (LLM Foundry's own
``random.Random(1234)`` sequence): row 0 <- rows {2, 3}, row 1 <- {0, 2}, row 2 <- {1, 3},
row 3 <- {0, 1}.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, TypeVar

import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.eval.datasets import ICLDataset, LanguageModelingDataset
from llmfoundry.eval.generation import GenerationWithAnswersDataset
from llmfoundry.eval.prompts import fewshot_indices, needs_prefix_space
from llmfoundry.eval.sources import ICLRow
from tests.fixtures import save_metaspace_tokenizer

DatasetT = TypeVar("DatasetT", bound=ICLDataset)
LM_ROWS = [
    {"context": "The sky is ", "continuation": "blue"},
    {"context": " Grass is\n", "continuation": " green "},
    {"context": "Snow is", "continuation": "white"},
    {"context": "Coal is", "continuation": " black"},
]
MC_ROWS = [
    {"query": "Question: 2+2?\n", "choices": ["4", " 5"], "gold": 0},
    {"query": "Question: 3+3?\n", "choices": ["5", "6"], "gold": 1},
    {"query": "Question: 1+1?", "choices": ["2", "3"], "gold": 0},
    {"query": "Question: 0+1?", "choices": ["0", "1"], "gold": 1},
]
SCHEMA_ROWS = [
    {"context_options": ["The cat", "The dog"], "continuation": "barked.", "gold": 1},
    {"context_options": ["Ice", "Fire"], "continuation": " is hot. ", "gold": 1},
    {"context_options": ["Fish", "Birds"], "continuation": "fly.", "gold": 1},
    {"context_options": ["Rain", "Sun"], "continuation": "is wet.", "gold": 0},
]
QA_ROWS = [
    {"context": "Capital of France?", "answer": "Paris", "aliases": ["paris"]},
    {"context": "Capital of Italy? ", "answer": " Rome "},
    {"context": "Capital of Spain?", "answer": "Madrid"},
    {"context": "Capital of Peru?", "answer": "Lima"},
]
COT_ROWS = [
    {"context": "2+3?", "chain_of_thought": "2 plus 3 is 5.", "answer": "5"},
    {"context": "4+4?", "chain_of_thought": "4 plus 4 is 8.", "answer": "8"},
    {"context": "1+0?", "chain_of_thought": "1 plus 0 is 1.", "answer": "1"},
    {"context": "3+3?", "chain_of_thought": "3 plus 3 is 6.", "answer": "6"},
]


def _dataset(
    task_type: str, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, **kw: Any
) -> ICLDataset:
    icl_rows = [ICLRow(row, "rows.jsonl", i + 1) for i, row in enumerate(rows)]
    dataset = registry.icl_datasets.get(task_type)(icl_rows, tokenizer, kw.pop("seq", 256), **kw)
    assert isinstance(dataset, ICLDataset)
    return dataset


def _typed_dataset(
    kind: type[DatasetT],
    task_type: str,
    rows: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    **kw: Any,
) -> DatasetT:
    """``_dataset(task_type, ...)``, checked to be a ``kind`` (whose own fields are read)."""
    dataset = _dataset(task_type, rows, tokenizer, **kw)
    assert isinstance(dataset, kind)
    return dataset


def _lm_dataset(
    rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, **kw: Any
) -> LanguageModelingDataset:
    return _typed_dataset(LanguageModelingDataset, "language_modeling", rows, tokenizer, **kw)


def _generation_dataset(
    rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, **kw: Any
) -> GenerationWithAnswersDataset:
    kind = GenerationWithAnswersDataset
    return _typed_dataset(kind, "generation_task_with_answers", rows, tokenizer, **kw)


def test_fewshot_draws_are_llm_foundrys() -> None:
    rng = random.Random(1234)
    assert [sorted(fewshot_indices(4, 2, i, rng)) for i in range(4)] == [
        [2, 3],
        [0, 2],
        [1, 3],
        [0, 1],
    ]
    rng = random.Random(7)
    assert [sorted(fewshot_indices(5, 3, i, rng)) for i in range(5)] == [
        [1, 2, 3],
        [0, 2, 4],
        [0, 3, 4],
        [0, 1, 4],
        [0, 2, 3],
    ]
    # Fewer rows than shots: every other row, no error.
    rng = random.Random(1234)
    assert [sorted(fewshot_indices(3, 5, i, rng)) for i in range(3)] == [[1, 2], [0, 2], [0, 1]]


def test_language_modeling_prompts(tokenizer: PreTrainedTokenizerBase) -> None:
    assert needs_prefix_space(tokenizer)
    style = {"prompt_string": "Colors:", "continuation_delimiter": " -> ", "prelimiter": "Q: "}
    dataset = _dataset("language_modeling", LM_ROWS, tokenizer, num_fewshot=2, **style)
    # Stripped rows; the context's trailing space moves to the continuation.
    assert dataset.prompt_texts(0) == (
        "Colors:\nQ: Snow is -> white\nQ: Coal is -> black",
        ["\nQ: The sky is ->"],
        [" blue"],
    )
    assert dataset.prompt_texts(1) == (
        "Colors:\nQ: The sky is -> blue\nQ: Snow is -> white",
        ["\nQ: Grass is ->"],
        [" green"],
    )
    zero = _dataset("language_modeling", LM_ROWS, tokenizer, continuation_delimiter=" ")
    assert zero.prompt_texts(3) == ("", ["Coal is"], [" black"])
    unstripped = _dataset(
        "language_modeling", LM_ROWS, tokenizer, continuation_delimiter=" ", strip_dataset=False
    )
    assert unstripped.prompt_texts(1) == ("", [" Grass is\n "], [" green "])


def test_prompt_is_tokenized_as_preamble_then_context(tokenizer: PreTrainedTokenizerBase) -> None:
    dataset = _lm_dataset(LM_ROWS, tokenizer, num_fewshot=1)
    preamble, contexts, _ = dataset.prompt_texts(2)
    assert preamble == "The sky is blue"  # the first shot has no delimiter before it
    expected_context = (
        tokenizer(preamble)["input_ids"]
        + tokenizer(contexts[0], add_special_tokens=False)["input_ids"]
    )
    [(context_ids, continuation_ids)] = dataset.encoded[2]
    assert context_ids == expected_context
    assert continuation_ids == tokenizer(" white", add_special_tokens=False)["input_ids"]


def test_multiple_choice_prompts(tokenizer: PreTrainedTokenizerBase) -> None:
    dataset = _dataset(
        "multiple_choice",
        MC_ROWS,
        tokenizer,
        num_fewshot=2,
        continuation_delimiter="\nAnswer: ",
        example_delimiter="\n\n",
    )
    assert dataset.prompt_texts(0) == (
        "Question: 1+1?\nAnswer: 2\n\nQuestion: 0+1?\nAnswer: 1",
        ["\n\nQuestion: 2+2?\nAnswer:"],
        [" 4", " 5"],
    )
    assert dataset.prompt_texts(3) == (
        "Question: 2+2?\nAnswer: 4\n\nQuestion: 3+3?\nAnswer: 6",
        ["\n\nQuestion: 0+1?\nAnswer:"],
        [" 0", " 1"],
    )
    # batch_size counts rows: 2 choices per question -> 3 questions per batch of 7 rows.
    assert dataset.loader_batch_size(7) == 3


def test_schema_prompts(tokenizer: PreTrainedTokenizerBase) -> None:
    zero = _dataset("schema", SCHEMA_ROWS, tokenizer, continuation_delimiter=" ")
    # Nothing precedes: the options alone, no delimiter; the continuation gets the space.
    assert zero.prompt_texts(0) == ("", ["The cat", "The dog"], [" barked."])
    assert zero.prompt_texts(1) == ("", ["Ice", "Fire"], [" is hot."])
    shots = _dataset(
        "schema", SCHEMA_ROWS, tokenizer, num_fewshot=2, continuation_delimiter=" ", prelimiter="S:"
    )
    # Shots: prelimiter before the delimiter; the row's options end in the stripped delimiter.
    assert shots.prompt_texts(0) == (
        "S:Birds fly.S:\nRain is wet.",
        ["S:\nThe cat", "S:\nThe dog"],
        [" barked."],
    )


def test_generation_prompts_and_answers(tokenizer: PreTrainedTokenizerBase) -> None:
    dataset = _generation_dataset(
        QA_ROWS,
        tokenizer,
        num_fewshot=2,
        continuation_delimiter="\nAnswer: ",
        prompt_string="Trivia.\n",
    )
    assert dataset.prompt_texts(1) == (
        "Trivia.\n\nCapital of France?\nAnswer: Paris\nCapital of Spain?\nAnswer: Madrid",
        ["\nCapital of Italy?\nAnswer:"],
        [" Rome "],  # accepted answers are kept as written (the metric strips them)
    )
    assert dataset.prompt_texts(0)[2] == ["Paris", "paris"]
    longest = max(len(tokenizer(a)["input_ids"]) for a in ("Paris", "paris", " Rome ", "Madrid"))
    assert dataset.generation_kwargs["max_new_tokens"] == longest


def test_chain_of_thought_prompts(tokenizer: PreTrainedTokenizerBase) -> None:
    dataset = _generation_dataset(
        COT_ROWS,
        tokenizer,
        num_fewshot=1,
        continuation_delimiter="\nA: ",
        cot_delimiter=" #### ",
    )
    assert dataset.prompt_texts(0)[:2] == (
        "3+3?\nA: 3 plus 3 is 6. #### 6",
        ["\n0+0?\nA:".replace("0+0", "2+3")],
    )
    responses = [f"{r['chain_of_thought']} #### {r['answer']}" for r in COT_ROWS]
    longest = max(len(tokenizer(r)["input_ids"]) for r in responses)
    # Ten tokens of room for a longer chain of thought.
    assert dataset.generation_kwargs["max_new_tokens"] == longest + 10


def test_prompts_are_cut_from_the_left(tokenizer: PreTrainedTokenizerBase) -> None:
    rows = [{"context": "word " * 80 + "end", "continuation": "done"}, *LM_ROWS[1:]]
    dataset = _lm_dataset(rows, tokenizer, seq=24)
    [(context_ids, continuation_ids)] = dataset.encoded[0]
    assert len(context_ids) + len(continuation_ids) == 24
    assert continuation_ids == tokenizer(" done", add_special_tokens=False)["input_ids"]
    assert str(tokenizer.decode(context_ids)).endswith("word end")


def test_sentencepiece_style_tokenizers_get_no_prefix_space_and_a_bos(tmp_path: Path) -> None:
    # A SentencePiece-like tokenizer (words start with '▁', a BOS is added) trained on the rows.
    text = [" ".join(r["context"] + " " + r["continuation"] for r in LM_ROWS)] * 20
    tokenizer = save_metaspace_tokenizer(tmp_path, text)
    assert isinstance(tokenizer.bos_token_id, int)
    assert not needs_prefix_space(tokenizer)
    dataset = _lm_dataset(LM_ROWS, tokenizer, num_fewshot=1)
    preamble, contexts, continuations = dataset.prompt_texts(0)
    assert (preamble, contexts, continuations) == ("Coal is black", ["\nThe sky is"], ["blue"])
    [(context_ids, _)] = dataset.encoded[0]
    assert context_ids[0] == tokenizer.bos_token_id  # the preamble keeps its special tokens
    assert context_ids.count(tokenizer.bos_token_id) == 1  # the context adds none
    # Zero-shot: the preamble is just the BOS.
    zero = _lm_dataset(LM_ROWS, tokenizer)
    [(zero_ids, _)] = zero.encoded[0]
    assert zero_ids[0] == tokenizer.bos_token_id
    assert zero_ids[1:] == tokenizer("The sky is", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("prelimiter_key", ["prelimiter", "question_prelimiter"])
def test_prelimiter_keys_reach_the_prompt(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, prelimiter_key: str
) -> None:
    from llmfoundry.eval import build_icl_evaluators

    from .helpers import icl_dataset, lm_task, write_jsonl

    task = lm_task(write_jsonl(tmp_path / "lm.jsonl", LM_ROWS), **{prelimiter_key: "Q: "})
    evaluators, _ = build_icl_evaluators([task], tokenizer, 64, 4)
    dataset = icl_dataset(evaluators[0])
    assert isinstance(dataset, ICLDataset)
    assert dataset.prompt_texts(0) == ("", ["Q: The sky is"], [" blue"])
