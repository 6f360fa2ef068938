"""In-context-learning metrics: accuracy of a model on ICL batches (``llmfoundry.eval.datasets``).

Each metric takes the whole batch (``needs_batch = True``), as Composer's
``HuggingFaceModel.update_metric`` calls it: ``metric.update(batch=..., outputs=..., labels=...)``.
For log-likelihood tasks ``outputs`` are the logits ``(rows, seq, vocab)`` and ``labels`` the
targets shifted left by one (position ``t`` holds token ``t + 1``), so the model's prediction
of continuation token ``i`` sits at position ``i - 1``. For generation tasks ``outputs`` are the
generated strings and ``labels`` each row's accepted answers.

The counts are ``dist_reduce_fx="sum"`` states, so results gathered over processes are exact.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torchmetrics import Metric

from llmfoundry import registry

__all__ = [
    "InContextLearningGenerationExactMatchAccuracy",
    "InContextLearningLMAccuracy",
    "InContextLearningMetric",
    "InContextLearningMultipleChoiceAccuracy",
    "InContextLearningMultipleChoiceSumAccuracy",
    "continuation_log_likelihoods",
    "normalize_answer",
]


class InContextLearningMetric(Metric):
    """Base of the ICL metrics: ``correct / total`` with summed counts.

    Subclasses implement ``update(batch, outputs, labels)`` and add to ``correct``/``total``.
    """

    # Composer hands these metrics the batch (``update(batch=, outputs=, labels=)``).
    needs_batch = True
    full_state_update = False

    def __init__(self, dist_sync_on_step: bool = False) -> None:
        super().__init__(dist_sync_on_step=dist_sync_on_step)
        self.add_state("correct", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def _count(self, correct: int, total: int) -> None:
        self.correct = cast(torch.Tensor, self.correct) + correct
        self.total = cast(torch.Tensor, self.total) + total

    def compute(self) -> torch.Tensor:
        """The fraction of examples answered correctly."""
        return cast(torch.Tensor, self.correct) / cast(torch.Tensor, self.total)


def _require(batch: Mapping[str, Any], keys: Sequence[str], metric: str) -> None:
    missing = [key for key in keys if key not in batch]
    if missing:
        raise ValueError(
            f"{metric} needs an ICL batch with {', '.join(missing)}; give this metric only to "
            "evaluators built by llmfoundry.eval.build_icl_evaluators"
        )


def continuation_log_likelihoods(
    logits: torch.Tensor, labels: torch.Tensor, continuation_indices: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Per row, the log-probability the model gives each continuation token (fp32).

    Args:
        logits: ``(rows, seq, vocab)``.
        labels: ``(rows, seq)`` targets shifted left by one.
        continuation_indices: per row, the positions of its continuation tokens in ``input_ids``.
    """
    scores = []
    for row, positions in enumerate(continuation_indices):
        before = positions.to(logits.device) - 1  # where each continuation token is predicted
        log_probs = torch.log_softmax(logits[row, before].float(), dim=-1)
        targets = labels[row, before.to(labels.device)].to(logits.device)
        scores.append(log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1))
    return scores


class InContextLearningLMAccuracy(InContextLearningMetric):
    """Language-modeling tasks: correct when every continuation token is the model's argmax."""

    def update(self, batch: Mapping[str, Any], outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Count each row of the batch."""
        _require(batch, ["continuation_indices"], type(self).__name__)
        correct = 0
        for row, positions in enumerate(batch["continuation_indices"]):
            before = positions.to(outputs.device) - 1
            predicted = outputs[row, before].argmax(dim=-1)
            targets = labels[row, before.to(labels.device)].to(predicted.device)
            correct += int(bool((predicted == targets).all()))
        self._count(correct, len(batch["continuation_indices"]))


class InContextLearningMultipleChoiceAccuracy(InContextLearningMetric):
    """Multiple-choice and schema tasks: correct when the gold choice scores highest.

    A choice's score is the log-likelihood of its continuation tokens. By default (as in LLM
    Foundry, which picks the choice of lowest perplexity) it is the *mean* per-token
    log-likelihood; ``length_normalized=False`` uses the *sum* instead. Ties go to the first
    choice.

    Args:
        dist_sync_on_step: synchronize the states on every ``forward``.
        length_normalized: score by the mean (True, default) or the sum (False).
    """

    def __init__(self, dist_sync_on_step: bool = False, length_normalized: bool = True) -> None:
        super().__init__(dist_sync_on_step=dist_sync_on_step)
        self.length_normalized = length_normalized

    def update(self, batch: Mapping[str, Any], outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Count each question (a ``choice_groupings`` range of rows) of the batch."""
        _require(
            batch,
            ["continuation_indices", "choice_groupings", "gold_indices"],
            type(self).__name__,
        )
        per_token = continuation_log_likelihoods(outputs, labels, batch["continuation_indices"])
        scores = [t.mean() if self.length_normalized else t.sum() for t in per_token]
        correct = 0
        for (start, end), gold in zip(
            batch["choice_groupings"], batch["gold_indices"], strict=True
        ):
            choice_scores = torch.stack(scores[start:end])
            correct += int(int(choice_scores.argmax()) == int(gold))
        self._count(correct, len(batch["gold_indices"]))


_ARTICLES = re.compile(r"\b(a|an|the)\b")
# ASCII punctuation plus the typographic single quotes and the acute accent.
_PUNCTUATION = set(string.punctuation + "\u2018\u2019\u00b4")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and the articles a/an/the removed, whitespace collapsed."""
    text = text.lower().replace("_", " ")
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def cut_generation(
    text: str, early_stopping_criteria: Sequence[str] | None, cot_delimiter: str | None
) -> str:
    """The answer part of a generation: up to the first stop sequence, after the last CoT delimiter."""
    for stop in early_stopping_criteria or ():
        if stop:
            text = text.split(stop, 1)[0]
    if cot_delimiter:
        text = text.split(cot_delimiter)[-1]
    return text


class InContextLearningGenerationExactMatchAccuracy(InContextLearningMetric):
    """Generation tasks: correct when the generated answer matches one of the row's answers.

    The generation is cut at the first of the batch's ``early_stopping_criteria`` and, with a
    ``cot_delimiter``, only the text after its last occurrence is kept. With
    ``do_normalization`` (the batch's flag, default True) both sides go through
    ``normalize_answer``; without it both are only stripped. As in LLM Foundry, the answer
    "matches" when the cleaned generation *starts with* a cleaned accepted answer (the
    generation may run on past the answer for up to ``max_new_tokens``).
    """

    def update(self, batch: Mapping[str, Any], outputs: Sequence[str], labels: Any) -> None:
        """Count each generated string against its row's list of accepted answers."""
        stops = batch.get("early_stopping_criteria")
        cot = batch.get("cot_delimiter")
        normalize = bool(batch.get("do_normalization", True))
        clean = normalize_answer if normalize else str.strip
        correct = 0
        for generated, answers in zip(outputs, labels, strict=True):
            answer = clean(cut_generation(generated, stops, cot))
            correct += int(any(answer.startswith(clean(a)) for a in answers))
        self._count(correct, len(outputs))


class InContextLearningMultipleChoiceSumAccuracy(InContextLearningMultipleChoiceAccuracy):
    """Multiple-choice accuracy scoring each choice by its *summed* log-likelihood (which
    favours short choices); name it in a task's ``metric_names`` to use it."""

    def __init__(self, dist_sync_on_step: bool = False) -> None:
        super().__init__(dist_sync_on_step=dist_sync_on_step, length_normalized=False)


ICL_METRICS: dict[str, type[InContextLearningMetric]] = {
    cls.__name__: cls
    for cls in (
        InContextLearningLMAccuracy,
        InContextLearningMultipleChoiceAccuracy,
        InContextLearningMultipleChoiceSumAccuracy,
        InContextLearningGenerationExactMatchAccuracy,
    )
}

for _name, _cls in ICL_METRICS.items():
    registry.metrics.register(_name, func=_cls)
