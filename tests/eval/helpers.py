"""Shared pieces of the ICL tests: JSONL writing, hand scoring, Composer eval (the tiny MPT is
:mod:`tests.fixtures`' ``tiny_text_mpt``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from composer.core import Evaluator
from composer.loggers import InMemoryLogger
from composer.models import HuggingFaceModel
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry.eval import build_icl_evaluators
from llmfoundry.eval.datasets import ICLDataset
from llmfoundry.eval.metrics import cut_generation, normalize_answer
from llmfoundry.eval.prompts import needs_prefix_space
from tests.fixtures import cpu_trainer

# Five multiple-choice questions on the fixture corpus's modules, of 2 or 3 choices each.
MC_ROWS = [
    {"query": "The file is opened with", "choices": [" open", " json", " the decoder"], "gold": 0},
    {"query": "A list is written", "choices": [" [1, 2]", " {}"], "gold": 1},
    {"query": "To indent text use", "choices": [" textwrap", " heapq", " shlex"], "gold": 0},
    {"query": "Keys are", "choices": [" strings", " sorted by value", " x"], "gold": 2},
    {"query": "The heap pops", "choices": [" the smallest", " a tuple"], "gold": 0},
]


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any] | str]) -> str:
    """Write ``rows`` one a line, a mapping as a JSON object and a string as it is (a malformed
    line, say); return the path as a string."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def scored(tokenizer: PreTrainedTokenizerBase, continuation: str) -> str:
    """The continuation as ICL tasks score it: with a leading space where the tokenizer needs
    one (LLM Foundry's rule, see ``llmfoundry.eval.prompts``)."""
    if needs_prefix_space(tokenizer) and not continuation.startswith(" "):
        return " " + continuation
    return continuation


def continuation_log_probs(
    model: HuggingFaceModel, tokenizer: PreTrainedTokenizerBase, prompt: str, continuation: str
) -> torch.Tensor:
    """Log-probabilities of the (scored) continuation's tokens after ``prompt``, from one
    unpadded forward."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    continuation_ids = tokenizer(scored(tokenizer, continuation), add_special_tokens=False)[
        "input_ids"
    ]
    ids = torch.tensor([prompt_ids + continuation_ids])
    with torch.no_grad():
        logits = cast(Any, model.model)(input_ids=ids).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(continuation_ids) - 1)
    return log_probs[positions, torch.tensor(continuation_ids)]


def all_tokens_are_argmax(
    model: HuggingFaceModel, tokenizer: PreTrainedTokenizerBase, prompt: str, continuation: str
) -> bool:
    """Whether the model's argmax predicts every (scored) continuation token after ``prompt``."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    continuation_ids = tokenizer(scored(tokenizer, continuation), add_special_tokens=False)[
        "input_ids"
    ]
    ids = torch.tensor([prompt_ids + continuation_ids])
    with torch.no_grad():
        logits = cast(Any, model.model)(input_ids=ids).logits[0]
    predicted = logits[len(prompt_ids) - 1 : -1].argmax(dim=-1)
    return predicted.tolist() == continuation_ids


def exact_match(generated: str, answers: Sequence[str], stops: Sequence[str] = ()) -> bool:
    """LLM Foundry's rule: the normalized, cut generation starts with a normalized answer."""
    cleaned = normalize_answer(cut_generation(generated, stops, None))
    return any(cleaned.startswith(normalize_answer(a)) for a in answers)


def run_eval(model: HuggingFaceModel, evaluators: Sequence[Evaluator]) -> dict[str, float]:
    """Evaluate with Composer's Trainer; the last logged value of every metric key."""
    memory = InMemoryLogger()
    trainer = cpu_trainer(model, eval_dataloader=list(evaluators), loggers=[memory])
    trainer.eval()
    trainer.close()
    return {
        key: float(values[-1][1])
        for key, values in memory.data.items()
        if key.startswith("metrics/")
    }


# --- building ICL evaluators in tests ------------------------------------------------------

SEQ = 128


def icl_evaluators(
    tasks: list[dict[str, Any]] | str,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 2,
    **kwargs: Any,
) -> list[Evaluator]:
    """The evaluators of ``tasks`` at max_seq_len ``SEQ``."""
    evaluators, _ = build_icl_evaluators(tasks, tokenizer, SEQ, batch_size, **kwargs)
    return evaluators


def icl_loader(evaluator: Evaluator) -> DataLoader:
    loader = evaluator.dataloader.dataloader
    assert isinstance(loader, DataLoader)
    return loader


def icl_dataset(evaluator: Evaluator) -> ICLDataset:
    dataset = icl_loader(evaluator).dataset
    assert isinstance(dataset, ICLDataset)
    return dataset


def only_dataset(
    task: dict[str, Any], tokenizer: PreTrainedTokenizerBase, **kwargs: Any
) -> ICLDataset:
    evaluators = icl_evaluators([task], tokenizer, **kwargs)
    assert len(evaluators) == 1
    return icl_dataset(evaluators[0])


def all_prompts(dataset: ICLDataset) -> list[tuple[str, list[str], list[str]]]:
    return [dataset.prompt_texts(i) for i in range(len(dataset))]


def first_batch(task: dict[str, Any], tokenizer: PreTrainedTokenizerBase, bs: int = 2) -> dict:
    return next(iter(icl_loader(icl_evaluators([task], tokenizer, bs)[0])))


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def lm_task(uri: str, **keys: Any) -> dict[str, Any]:
    return {"label": "lm", "dataset_uri": uri, "icl_task_type": "language_modeling", **keys}
