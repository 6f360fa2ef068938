"""Every ``icl_tasks`` key, shown by its effect (where rows come from: test_icl_sources.py): how prompts and
batches are built (``pad_tok_id``, delimiters, ``prompt_string``, ``fewshot_random_seed``,
``strip_dataset``, ``has_categories``), what generation batches carry (``generation_kwargs``,
``early_stopping_criteria``, ``cot_delimiter``, ``do_normalization``), what is scored
(``metric_names``, the calibration errors) and which rows a subset covers
(``icl_subset_num_batches``)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from composer.core import Evaluator
from composer.metrics.nlp import MaskedAccuracy
from transformers import PreTrainedTokenizerBase, StoppingCriteriaList

from llmfoundry import registry
from llmfoundry.eval import build_icl_evaluators
from llmfoundry.eval.generation import StopOnSequence
from llmfoundry.eval.metrics import (
    InContextLearningGenerationExactMatchAccuracy,
    InContextLearningLMExpectedCalibrationError,
    InContextLearningMCExpectedCalibrationError,
)
from llmfoundry.utils.exceptions import ConfigError

from .helpers import (
    SEQ,
    all_prompts,
    first_batch,
    icl_dataset,
    icl_evaluators,
    icl_loader,
    lm_task,
    only_dataset,
    token_ids,
    write_jsonl,
)

# --------------------------------------------------------------------------- pad_tok_id


def test_pad_tok_id_pads_and_masks_every_token_equal_to_it(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    rows = [
        {"context": "alpha beta", "continuation": " gamma"},
        {"context": "a much longer context than the first one", "continuation": " end"},
    ]
    uri = write_jsonl(tmp_path / "lm.jsonl", rows)
    short = token_ids(tokenizer, "alpha beta") + token_ids(tokenizer, " gamma")
    pad = token_ids(tokenizer, "alpha")[-1]  # the token "a", which the short row also holds
    real_pads = [i for i, token in enumerate(short) if token == pad]
    assert real_pads and pad != tokenizer.pad_token_id

    batch = first_batch(lm_task(uri, pad_tok_id=pad), tokenizer)
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    # Longest row first; the short row is right-padded with pad_tok_id.
    assert input_ids[1, : len(short)].tolist() == short
    assert (input_ids[1, len(short) :] == pad).all() and input_ids.shape[1] > len(short)
    # LLM Foundry's rule: the mask is input_ids != pad_tok_id, so real "a" tokens are masked too.
    assert torch.equal(mask, input_ids != pad)
    assert [bool(mask[1, i]) for i in real_pads] == [False] * len(real_pads)

    default = first_batch(lm_task(uri), tokenizer)
    assert (default["input_ids"][1, len(short) :] == tokenizer.pad_token_id).all()
    assert default["attention_mask"][1].tolist() == [True] * len(short) + [False] * (
        default["input_ids"].shape[1] - len(short)
    )


LM_ROWS = [{"context": f"ctx{i}", "continuation": f" cont{i}"} for i in range(4)]


# --------------------------------------------------------------------------- generation keys

QA_ROWS = [
    {"context": "Q: the capital of France?", "answer": "Paris"},
    {"context": "Q: of Italy?", "answer": "Rome", "aliases": ["Roma"]},
]


def _qa_task(tmp_path: Path, **keys: Any) -> dict[str, Any]:
    uri = write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
    return {
        "label": "qa",
        "dataset_uri": uri,
        "icl_task_type": "generation_task_with_answers",
        **keys,
    }


def test_generation_kwargs_reach_the_batch(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    default = first_batch(_qa_task(tmp_path), tokenizer)["generation_kwargs"]
    longest = max(len(tokenizer(a)["input_ids"]) for a in ("Paris", "Rome", "Roma"))
    assert default == {
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,
        "eos_token_id": tokenizer.eos_token_id,
        "max_new_tokens": longest,
    }
    task = _qa_task(
        tmp_path,
        pad_tok_id=7,
        generation_kwargs={"max_new_tokens": 9, "num_beams": 3, "do_sample": False},
    )
    batch = first_batch(task, tokenizer)
    assert batch["generation_kwargs"] == {
        "pad_token_id": 7,
        "use_cache": True,
        "eos_token_id": tokenizer.eos_token_id,
        "max_new_tokens": 9,
        "num_beams": 3,
        "do_sample": False,
    }
    # Prompts are left-padded with pad_tok_id.
    shorter = len(token_ids(tokenizer, "Q: of Italy?"))
    assert batch["input_ids"][1, :-shorter].eq(7).all()
    assert batch["input_ids"][1, -shorter:].tolist() == token_ids(tokenizer, "Q: of Italy?")


def test_stop_on_sequence_stops_when_every_row_has_produced_it(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    def rows(*texts: str) -> torch.LongTensor:
        ids = [token_ids(tokenizer, t) for t in texts]
        width = max(map(len, ids))
        padded = [[tokenizer.pad_token_id] * (width - len(i)) + i for i in ids]
        return cast(torch.LongTensor, torch.tensor(padded))

    stop = StopOnSequence("Q:", tokenizer, batch_size=2)
    assert stop(rows("hello Q:", "hello world")) is False  # one row is not done
    assert stop.done == [True, False]
    # Row 0 has moved past "Q:", but its flag sticks; row 1 now ends with it: stop.
    assert stop(rows("hello Q: more words", "hello world Q:")) is True
    fresh = StopOnSequence("Q:", tokenizer, batch_size=2)
    assert fresh(rows("hello Q: more words", "hello world Q:")) is False

    # A stop string produced token by token ("\n" "\n") counts as well.
    double = StopOnSequence("\n\n", tokenizer, batch_size=1)
    newline = token_ids(tokenizer, "\n")
    assert len(newline) == 1
    ending = cast(
        torch.LongTensor, torch.tensor([token_ids(tokenizer, "x = 1") + newline + newline])
    )
    assert double(ending) is True


def test_early_stopping_criteria_build_one_criterion_per_stop_string(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    batch = first_batch(_qa_task(tmp_path, early_stopping_criteria=["\n\n", "Q:"]), tokenizer)
    criteria = batch["generation_kwargs"]["stopping_criteria"]
    assert isinstance(criteria, StoppingCriteriaList)
    assert [(type(c), c.stop, c.done) for c in criteria] == [
        (StopOnSequence, "\n\n", [False, False]),
        (StopOnSequence, "Q:", [False, False]),
    ]
    assert batch["early_stopping_criteria"] == ["\n\n", "Q:"]
    assert (
        "stopping_criteria" not in first_batch(_qa_task(tmp_path), tokenizer)["generation_kwargs"]
    )


def _exact_match(batch: dict[str, Any], outputs: list[str], labels: list[list[str]]) -> float:
    metric = InContextLearningGenerationExactMatchAccuracy()
    metric.update(batch, outputs, labels)
    return float(metric.compute())


def test_cot_delimiter_and_do_normalization_change_the_score(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    labels = [["Paris"], ["Rome", "Roma"]]
    # The task keys reach the batch the metric reads.
    plain = first_batch(_qa_task(tmp_path), tokenizer)
    assert (plain["cot_delimiter"], plain["do_normalization"]) == ("", True)
    assert plain["labels"] == labels
    cot = first_batch(_qa_task(tmp_path, cot_delimiter=" #### "), tokenizer)
    strict = first_batch(_qa_task(tmp_path, do_normalization=False), tokenizer)
    assert cot["cot_delimiter"] == " #### " and strict["do_normalization"] is False

    reasoned = [" It is in France, so #### Paris", " Italy's is #### roma!"]
    assert _exact_match(plain, reasoned, labels) == 0.0
    assert _exact_match(cot, reasoned, labels) == 1.0  # only after the last delimiter counts

    styled = [" The Paris.", " Rome "]
    assert _exact_match(plain, styled, labels) == 1.0  # articles, punctuation, case dropped
    assert _exact_match(strict, styled, labels) == 0.5  # only whitespace is stripped


def test_stop_strings_are_one_regular_expression(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    labels = [["Paris"], ["Rome"]]
    outputs = [" Paris\nQ: next", " Q: no\nRome"]

    def score(stops: list[str]) -> float:
        task = _qa_task(tmp_path, early_stopping_criteria=stops)
        return _exact_match(first_batch(task, tokenizer), outputs, labels)

    assert score(["\n"]) == 0.5  # row 2 is cut to " Q: no"
    assert score(["Q:"]) == 0.5  # row 1 keeps " Paris\n", row 2 is cut to " "
    assert score(["XYZ"]) == 0.5  # row 1 matches by its start; row 2 starts with "q no"
    # As in LLM Foundry, "." is a pattern: it matches the first character, leaving nothing.
    assert score(["."]) == 0.0
    assert score([r"\n"]) == 0.5


# --------------------------------------------------------------------------- prompt keys


PAIR = [
    {"context": "Sky is", "continuation": "blue"},
    {"context": "Grass is", "continuation": "green"},
]


def test_prompt_string_and_delimiters_shape_the_prompt(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    uri = write_jsonl(tmp_path / "lm.jsonl", PAIR)
    keys = {
        "prompt_string": "Colors:",
        "example_delimiter": " | ",
        "continuation_delimiter": " => ",
    }
    # With two rows and one shot, each row's shot is the other row.
    shaped = all_prompts(only_dataset(lm_task(uri, num_fewshot=[1], **keys), tokenizer))
    assert shaped == [
        ("Colors: | Grass is => green", [" | Sky is =>"], [" blue"]),
        ("Colors: | Sky is => blue", [" | Grass is =>"], [" green"]),
    ]
    defaults = all_prompts(only_dataset(lm_task(uri, num_fewshot=[1]), tokenizer))
    assert defaults == [
        ("Grass is green", ["\nSky is"], [" blue"]),
        ("Sky is blue", ["\nGrass is"], [" green"]),
    ]
    # Zero-shot: the prompt string alone precedes the row (so the delimiter does too).
    zero = all_prompts(only_dataset(lm_task(uri, **keys), tokenizer))
    assert zero[0] == ("Colors:", [" | Sky is =>"], [" blue"])
    assert all_prompts(only_dataset(lm_task(uri, continuation_delimiter=" => "), tokenizer))[0] == (
        "",
        ["Sky is =>"],
        [" blue"],
    )


def test_fewshot_random_seed_chooses_the_shots(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    rows = [{"context": f"c{i}", "continuation": f"v{i}"} for i in range(6)]
    uri = write_jsonl(tmp_path / "lm.jsonl", rows)

    def shots(seed: int | None) -> list[list[int]]:
        keys = {} if seed is None else {"fewshot_random_seed": seed}
        dataset = only_dataset(lm_task(uri, num_fewshot=[2], **keys), tokenizer)
        return [
            [int(n) for n in re.findall(r"c(\d) v\d", preamble)]
            for preamble, _, _ in all_prompts(dataset)
        ]

    # random.Random(seed) drawn as LLM Foundry draws (see tests/eval/test_icl_prompts.py).
    default = [[3, 4], [0, 5], [0, 1], [0, 5], [0, 2], [3, 4]]
    assert shots(None) == default
    assert shots(1234) == default
    assert shots(7) == [[1, 2], [0, 3], [0, 4], [0, 2], [0, 1], [0, 3]]


def test_strip_dataset_false_keeps_the_rows_whitespace(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    uri = write_jsonl(tmp_path / "lm.jsonl", [{"context": " Sky is\n", "continuation": " blue "}])
    assert all_prompts(only_dataset(lm_task(uri), tokenizer)) == [("", ["Sky is"], [" blue"])]
    assert all_prompts(only_dataset(lm_task(uri, strip_dataset=False), tokenizer)) == [
        ("", [" Sky is\n "], [" blue "])
    ]


def test_has_categories_gives_one_evaluator_per_category_in_sorted_order(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    categories = ["zeta", "alpha", "mid", "alpha", "zeta", "mid"]
    rows = [
        {"context": f"c{i}", "continuation": f"v{i}", "category": c}
        for i, c in enumerate(categories)
    ]
    task = lm_task(write_jsonl(tmp_path / "lm.jsonl", rows), num_fewshot=[0, 1])
    evaluators, keys = build_icl_evaluators([{**task, "has_categories": True}], tokenizer, SEQ, 2)
    assert [e.label for e in evaluators] == [
        f"lm/{k}-shot/{c}" for k in (0, 1) for c in ("alpha", "mid", "zeta")
    ]
    assert keys[:3] == [
        f"metrics/lm/0-shot/{c}/InContextLearningLMAccuracy" for c in ("alpha", "mid", "zeta")
    ]
    # Each evaluator holds its category's rows; a shot comes from the same category.
    one_shot = {e.label: all_prompts(icl_dataset(e)) for e in evaluators[3:]}
    assert one_shot == {
        "lm/1-shot/alpha": [("c3 v3", ["\nc1"], [" v1"]), ("c1 v1", ["\nc3"], [" v3"])],
        "lm/1-shot/mid": [("c5 v5", ["\nc2"], [" v2"]), ("c2 v2", ["\nc5"], [" v5"])],
        "lm/1-shot/zeta": [("c4 v4", ["\nc0"], [" v0"]), ("c0 v0", ["\nc4"], [" v4"])],
    }
    # Without the key, one evaluator over every row.
    assert [e.label for e in icl_evaluators([task], tokenizer)] == ["lm/0-shot", "lm/1-shot"]


# --------------------------------------------------------------------------- metric_names


SHORT_NAMES = {
    "lm_accuracy": "InContextLearningLMAccuracy",
    "mc_accuracy": "InContextLearningMultipleChoiceAccuracy",
    "qa_accuracy": "InContextLearningGenerationExactMatchAccuracy",
    "lm_expected_calibration_error": "InContextLearningLMExpectedCalibrationError",
    "mc_expected_calibration_error": "InContextLearningMCExpectedCalibrationError",
    "code_eval_accuracy": "InContextLearningCodeEvalAccuracy",
}


@pytest.mark.parametrize(("short", "class_name"), SHORT_NAMES.items())
def test_llm_foundry_metric_names_map_to_the_classes(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, short: str, class_name: str
) -> None:
    task = lm_task(write_jsonl(tmp_path / "lm.jsonl", LM_ROWS), metric_names=[short])
    evaluators, keys = build_icl_evaluators([task], tokenizer, SEQ, 2)
    assert evaluators[0].metric_names == [class_name]
    assert keys == [f"metrics/lm/0-shot/{class_name}"]
    assert registry.metrics.get(short) is registry.metrics.get(class_name)
    assert registry.metrics.get(short).__name__ == class_name


def test_unknown_metric_name_suggests_the_closest(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    task = lm_task(write_jsonl(tmp_path / "lm.jsonl", LM_ROWS), metric_names=["mc_acuracy"])
    with pytest.raises(ConfigError) as err:
        build_icl_evaluators([task], tokenizer, SEQ, 2)
    message = str(err.value)
    assert message.startswith(
        "icl_tasks[0].metric_names: 'mc_acuracy' is not an ICL metric; did you mean 'mc_accuracy'?"
    )
    assert "\n" not in message


def test_masked_accuracy_is_registered() -> None:
    assert registry.metrics.get("masked_accuracy") is MaskedAccuracy


VOCAB = 4


def _logits(row_dists: list[list[dict[int, float]]]) -> torch.Tensor:
    """``(rows, len + 1, VOCAB)`` logits whose softmax at position ``t`` is ``row_dists[r][t]``
    (tokens not named share what is left equally)."""
    rows = len(row_dists)
    width = max(len(d) for d in row_dists) + 1
    logits = torch.zeros(rows, width, VOCAB)
    for r, dists in enumerate(row_dists):
        for t, named in enumerate(dists):
            rest = (1 - sum(named.values())) / (VOCAB - len(named))
            probs = [named.get(token, rest) for token in range(VOCAB)]
            logits[r, t] = torch.tensor([math.log(p) for p in probs])
    return logits


def test_mc_expected_calibration_error_on_hand_made_probabilities() -> None:
    # 2 questions of 2 rows; each row's one continuation token (2) sits at position 1, so its
    # probability is read at position 0 (labels are shifted left by one).
    target = 2
    probs = [0.6, 0.2, 0.47, 0.03]
    logits = _logits([[{target: p}] for p in probs])
    labels = torch.full((4, 2), target)
    batch = {
        "continuation_indices": [torch.tensor([1])] * 4,
        "choice_groupings": [(0, 2), (2, 4)],
        "gold_indices": [1, 0],
    }
    metric = InContextLearningMCExpectedCalibrationError()
    metric.update(batch, logits, labels)
    # Q1: best row 0 (not gold 1), confidence 0.6 / 0.8 = 0.75 -> bucket [0.7, 0.8), wrong.
    # Q2: best row 2 (gold), confidence 0.47 / 0.5 = 0.94 -> bucket [0.9, 1.0], right.
    # ECE = 1/2 |0 - 0.75| + 1/2 |1 - 0.95| (buckets are scored at their midpoints)
    assert float(metric.compute()) == pytest.approx(0.5 * 0.75 + 0.5 * 0.05, abs=1e-6)


def test_lm_expected_calibration_error_on_hand_made_probabilities() -> None:
    target = 2
    logits = _logits(
        [
            [{target: 0.9}, {target: 0.72}],  # right; confidence = least sure token = 0.72
            [{3: 0.55, target: 0.25}],  # wrong (argmax 3); confidence 0.55
            [{target: 0.35}],  # right (others 0.65 / 3 each); confidence 0.35
        ]
    )
    labels = torch.full((3, 3), target)
    batch = {"continuation_indices": [torch.tensor([1, 2]), torch.tensor([1]), torch.tensor([1])]}
    metric = InContextLearningLMExpectedCalibrationError()
    metric.update(batch, logits, labels)
    # Buckets 7, 5 and 3 (midpoints 0.75, 0.55, 0.35), one row each.
    expected = (abs(1 - 0.75) + abs(0 - 0.55) + abs(1 - 0.35)) / 3
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------- subsets


def test_icl_subset_num_batches_covers_the_first_batches_of_the_file(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    extra = [1, 6, 2, 8, 3, 7, 4, 5]  # row i's context grows with extra[i]
    rows = [{"context": f"r{i}" + " x" * n, "continuation": " y"} for i, n in enumerate(extra)]
    task = lm_task(write_jsonl(tmp_path / "lm.jsonl", rows))

    def served(**kwargs: Any) -> tuple[Evaluator, list[list[int]]]:
        evaluator = icl_evaluators([task], tokenizer, 2, **kwargs)[0]
        batches = []
        for batch in icl_loader(evaluator):
            texts = tokenizer.batch_decode(
                [
                    ids[mask]
                    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
                ]
            )
            batches.append([int(re.findall(r"^r(\d)", t)[0]) for t in texts])
        return evaluator, batches

    # Every row: longest first.
    whole, batches = served()
    assert whole.subset_num_batches in (None, -1)
    assert batches == [[3, 5], [1, 7], [6, 4], [2, 0]]
    # Two batches: the rows LLM Foundry's first two batches hold (0-3), longest first.
    subset, batches = served(icl_subset_num_batches=2)
    assert subset.subset_num_batches == 2
    assert {row for batch in batches[:2] for row in batch} == {0, 1, 2, 3}
    assert batches == [[3, 1], [2, 0], [5, 7], [6, 4]]
