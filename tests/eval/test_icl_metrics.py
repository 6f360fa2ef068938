"""ICL evaluators end to end: each metric, run through Composer's Trainer.eval, equals a hand
computation from the model's own log-likelihoods / greedy output, for batch sizes 1, 2 and 3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry.eval import (
    InContextLearningGenerationExactMatchAccuracy,
    InContextLearningMultipleChoiceAccuracy,
    build_icl_evaluators,
)
from llmfoundry.models.hf import ComposerHFCausalLM, ComposerMPTCausalLM
from tests.fixtures import greedy_continuation, tiny_text_mpt

from .helpers import (
    all_tokens_are_argmax,
    continuation_log_probs,
    exact_match,
    lm_task,
    run_eval,
    write_jsonl,
)

DELIM = " =>"
SEQ = 64


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerBase) -> ComposerMPTCausalLM:
    return tiny_text_mpt(tokenizer)


def _task(folder: Path, label: str, task_type: str, rows: list[Any], **keys: Any) -> dict[str, Any]:
    """A task section labelled ``label`` reading ``rows`` (written to ``folder/<label>.jsonl``),
    with the continuation delimiter ``DELIM``; ``keys`` add or replace keys."""
    uri = write_jsonl(folder / f"{label}.jsonl", rows)
    return {
        "label": label,
        "dataset_uri": uri,
        "icl_task_type": task_type,
        "continuation_delimiter": DELIM,
        **keys,
    }


def _evaluate(model, tokenizer, task: dict, batch_size: int) -> dict[str, float]:
    evaluators, keys = build_icl_evaluators([task], tokenizer, SEQ, batch_size)
    results = run_eval(model, evaluators)
    assert set(keys) <= set(results)
    return results


def test_language_modeling_accuracy_matches_hand_argmax(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, model: ComposerMPTCausalLM
) -> None:
    candidates = [
        "def load(path):", "import json", "class Decoder:", "for key in", "return", "x = [",
        "while True:", "if name", "with open", "print(", "try:", "raise", "self.value",
        "lambda x:", "assert", "yield", "del items", "global state", "async def", "await",
    ]  # fmt: skip
    # Rows the model gets right continue with its own greedy tokens; a scored continuation
    # starts with a space (LLM Foundry's prefix-space rule), so keep greedy texts that do.
    greedy = [(c, greedy_continuation(model.model, tokenizer, c + DELIM, 2)) for c in candidates]
    right = [(c, text) for c, text in greedy if text.startswith(" ") and text.strip()][:3]
    assert len(right) == 3
    rows = [{"context": c, "continuation": text} for c, text in right]
    rows += [{"context": c, "continuation": " value)"} for c in candidates[:3]]
    expected_each = [
        all_tokens_are_argmax(model, tokenizer, r["context"] + DELIM, r["continuation"])
        for r in rows
    ]
    expected = sum(expected_each) / len(rows)
    assert 0 < expected < 1  # both outcomes are exercised
    task = lm_task(
        write_jsonl(tmp_path / "lm.jsonl", rows), num_fewshot=[0], continuation_delimiter=DELIM
    )
    for batch_size in (1, 2, 3):
        results = _evaluate(model, tokenizer, task, batch_size)
        assert results["metrics/lm/0-shot/InContextLearningLMAccuracy"] == pytest.approx(expected)


MC_ROWS = [
    {"query": "The file is opened with", "choices": [" open", " json", " the decoder"], "gold": 0},
    {"query": "A list is written", "choices": [" [1, 2]", " {}"], "gold": 1},
    {"query": "To indent text use", "choices": [" textwrap", " heapq", " shlex", " os"], "gold": 0},
    {"query": "Keys are", "choices": [" strings", " sorted by value", " x"], "gold": 2},
    {"query": "The heap pops", "choices": [" the smallest", " a tuple"], "gold": 0},
    {"query": "Quote a shell word with", "choices": [" quote", " split it", " join"], "gold": 1},
    {"query": "Dump to", "choices": [" a string", " stdout", " bytes"], "gold": 2},
]


def _mc_expected(model, tokenizer, length_normalized: bool) -> float:
    correct = 0
    for row in MC_ROWS:
        scores = []
        for choice in row["choices"]:
            lp = continuation_log_probs(model, tokenizer, row["query"] + DELIM, choice)
            scores.append(float(lp.mean() if length_normalized else lp.sum()))
        correct += int(max(range(len(scores)), key=lambda i: scores[i]) == row["gold"])
    return correct / len(MC_ROWS)


def _assert_at_batch_sizes_1_to_3(
    model: ComposerMPTCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    task: dict[str, Any],
    metric: str,
    expected: float,
) -> None:
    """Evaluating ``task`` zero-shot in batches of 1, 2 and 3 gives ``metric`` the value
    ``expected`` every time."""
    for batch_size in (1, 2, 3):
        results = _evaluate(model, tokenizer, task, batch_size)
        key = f"metrics/{task['label']}/0-shot/{metric}"
        assert results[key] == pytest.approx(expected), batch_size


def test_multiple_choice_accuracy_matches_hand_mean_log_likelihood(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, model: ComposerMPTCausalLM
) -> None:
    expected = _mc_expected(model, tokenizer, length_normalized=True)
    assert 0 < expected < 1
    task = _task(tmp_path, "mc", "multiple_choice", MC_ROWS)
    _assert_at_batch_sizes_1_to_3(
        model, tokenizer, task, "InContextLearningMultipleChoiceAccuracy", expected
    )


def test_metric_names_choose_the_summed_log_likelihood_rule(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, model: ComposerMPTCausalLM
) -> None:
    task = _task(
        tmp_path,
        "mc",
        "multiple_choice",
        MC_ROWS,
        metric_names=[
            "InContextLearningMultipleChoiceAccuracy",
            "InContextLearningMultipleChoiceSumAccuracy",
        ],
    )
    results = _evaluate(model, tokenizer, task, batch_size=2)
    assert results["metrics/mc/0-shot/InContextLearningMultipleChoiceSumAccuracy"] == (
        pytest.approx(_mc_expected(model, tokenizer, length_normalized=False))
    )
    assert results["metrics/mc/0-shot/InContextLearningMultipleChoiceAccuracy"] == (
        pytest.approx(_mc_expected(model, tokenizer, length_normalized=True))
    )


def test_schema_scores_the_shared_continuation_after_each_option(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, model: ComposerMPTCausalLM
) -> None:
    rows = [
        {
            "context_options": ["The decoder", "The encoder"],
            "continuation": " reads JSON",
            "gold": 0,
        },
        {
            "context_options": ["A heap", "A list", "A dict"],
            "continuation": " is sorted",
            "gold": 2,
        },
        {"context_options": ["Quote it", "Split it"], "continuation": " with shlex", "gold": 1},
        {"context_options": ["Wrap", "Fill", "Dedent"], "continuation": " the text", "gold": 0},
        {"context_options": ["Keys", "Values"], "continuation": " are strings", "gold": 0},
    ]
    correct = 0
    for row in rows:
        scores = [
            float(
                # Zero-shot schema rows are the option alone, no delimiter (LLM Foundry's layout).
                continuation_log_probs(model, tokenizer, option, row["continuation"]).mean()
            )
            for option in row["context_options"]
        ]
        correct += int(max(range(len(scores)), key=lambda i: scores[i]) == row["gold"])
    expected = correct / len(rows)
    assert 0 < expected < 1
    task = _task(tmp_path, "schema", "schema", rows)
    _assert_at_batch_sizes_1_to_3(
        model, tokenizer, task, "InContextLearningMultipleChoiceAccuracy", expected
    )


def test_multiple_choice_sum_rule_is_an_option() -> None:
    # One question, two choices: choice 0 has one token of log-prob -1 (mean -1, sum -1);
    # choice 1 has two tokens of log-prob -0.9 each (mean -0.9, sum -1.8). The mean picks
    # choice 1, the sum picks choice 0.
    vocab = 4
    logits = torch.full((2, 4, vocab), -30.0)

    def set_log_prob(row: int, position: int, token: int, log_prob: float) -> None:
        # Two live tokens: ``token`` with probability p, token 3 with the rest.
        p = torch.tensor(log_prob).exp()
        logits[row, position, token] = torch.log(p)
        logits[row, position, 3] = torch.log(1 - p)

    set_log_prob(0, 1, 2, -1.0)
    set_log_prob(1, 1, 2, -0.9)
    set_log_prob(1, 2, 2, -0.9)
    labels = torch.tensor([[0, 0, 2, -100], [0, 0, 2, 2]])[:, 1:]  # shifted left by one
    labels = torch.cat([labels, torch.full((2, 1), -100)], dim=1)
    batch = {
        "continuation_indices": [torch.tensor([2]), torch.tensor([2, 3])],
        "choice_groupings": [(0, 2)],
        "gold_indices": [1],
    }
    mean_rule = InContextLearningMultipleChoiceAccuracy()
    mean_rule.update(batch, logits, labels)
    sum_rule = InContextLearningMultipleChoiceAccuracy(length_normalized=False)
    sum_rule.update(batch, logits, labels)
    assert float(mean_rule.compute()) == 1.0
    assert float(sum_rule.compute()) == 0.0


def test_exact_match_cuts_at_stop_and_cot_and_normalizes() -> None:
    metric = InContextLearningGenerationExactMatchAccuracy()
    batch = {"early_stopping_criteria": ["\n"], "cot_delimiter": "#", "do_normalization": True}
    outputs = [
        " The  Paris!\nQ: Rome",  # cut at the newline, article and punctuation dropped: match
        " think... # LONDON",  # after the CoT delimiter, case-folded: match
        " Berlin",  # not an accepted answer
        " Rome\nParis",  # "paris" only after the stop sequence: no match
    ]
    labels = [["paris"], ["London", "londres"], ["Bonn"], ["Paris"]]
    metric.update(batch, outputs, labels)
    assert float(metric.compute()) == pytest.approx(2 / 4)
    strict = InContextLearningGenerationExactMatchAccuracy()
    strict.update({"do_normalization": False}, [" Paris", "paris"], [["Paris"], ["Paris"]])
    assert float(strict.compute()) == pytest.approx(1 / 2)


def test_generation_exact_match_matches_the_models_greedy_output(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, model: ComposerMPTCausalLM
) -> None:
    contexts = ["Q: what is loaded?", "Q: which module?", "Q: sorted by?", "Q: how to quote?"]
    rows = []
    for i, context in enumerate(contexts):
        own = greedy_continuation(model.model, tokenizer, context + DELIM, 3)
        # Even rows: the model's own greedy text is the answer, so the row must match.
        answer = own if i % 2 == 0 else " zebra crossing"
        rows.append({"context": context, "answer": answer, "aliases": ["zebra"]})
    new_tokens = max(
        len(tokenizer(a, add_special_tokens=False)["input_ids"])
        for r in rows
        for a in [r["answer"], *r["aliases"]]
    )
    expected_each = [
        exact_match(
            greedy_continuation(model.model, tokenizer, r["context"] + DELIM, new_tokens),
            [r["answer"], *r["aliases"]],
        )
        for r in rows
    ]
    assert expected_each[0] and expected_each[2]
    expected = sum(expected_each) / len(rows)
    assert expected < 1
    task = _task(tmp_path, "qa", "generation_task_with_answers", rows)
    # 2 and 3 left-pad the shorter prompts
    _assert_at_batch_sizes_1_to_3(
        model, tokenizer, task, "InContextLearningGenerationExactMatchAccuracy", expected
    )


def test_hf_causal_lm_carries_the_icl_metrics(
    tmp_path: Path, llama_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    # A tiny Llama through ComposerHFCausalLM: multiple choice and generation, bs 2 (padded).
    model = ComposerHFCausalLM(tokenizer, str(llama_dir)).eval()
    mc_expected = _mc_expected(model, tokenizer, length_normalized=True)
    contexts = ["Q: what is loaded?", "Q: which module?", "Q: sorted by?"]
    qa_rows = [
        {
            "context": c,
            "answer": greedy_continuation(model.model, tokenizer, c + DELIM, 3)
            if i != 1
            else " zebra",
        }
        for i, c in enumerate(contexts)
    ]
    new_tokens = max(
        len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) for r in qa_rows
    )
    qa_expected = sum(
        exact_match(
            greedy_continuation(model.model, tokenizer, r["context"] + DELIM, new_tokens),
            [r["answer"]],
        )
        for r in qa_rows
    ) / len(qa_rows)
    tasks = [
        _task(tmp_path, "mc", "multiple_choice", MC_ROWS),
        _task(tmp_path, "qa", "generation_task_with_answers", qa_rows),
    ]
    evaluators, _ = build_icl_evaluators(tasks, tokenizer, SEQ, 2)
    results = run_eval(model, evaluators)
    assert results["metrics/mc/0-shot/InContextLearningMultipleChoiceAccuracy"] == pytest.approx(
        mc_expected
    )
    assert results[
        "metrics/qa/0-shot/InContextLearningGenerationExactMatchAccuracy"
    ] == pytest.approx(qa_expected)
    assert qa_expected >= 2 / 3  # the model's own greedy answers match
