"""In-context-learning metrics: accuracy of a model on ICL batches (``llmfoundry.eval.datasets``).

Each metric takes the whole batch (``needs_batch = True``), as Composer's
``HuggingFaceModel.update_metric`` calls it: ``metric.update(batch=..., outputs=..., labels=...)``.
For log-likelihood tasks ``outputs`` are the logits ``(rows, seq, vocab)`` and ``labels`` the
targets shifted left by one (position ``t`` holds token ``t + 1``), so the model's prediction
of continuation token ``i`` sits at position ``i - 1``. For generation tasks ``outputs`` are the
generated strings and ``labels`` each row's accepted answers.

The counts are ``dist_reduce_fx="sum"`` states, so results gathered over processes are exact.

The accuracy metrics' ``update`` also returns what each example came to, as LLM Foundry's do:
a dict of equally long lists, one entry per example (a question, for multiple choice), with
``result`` (1 right, 0 wrong) and the task's details; token ids are 1-D tensors. Composer puts
it in ``state.metric_outputs``, where ``eval_output_logging`` turns it into table rows.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torchmetrics import Metric

from llmfoundry import registry

__all__ = [
    "METRIC_ALIASES",
    "InContextLearningExpectedCalibrationError",
    "InContextLearningGenerationExactMatchAccuracy",
    "InContextLearningLMAccuracy",
    "InContextLearningLMExpectedCalibrationError",
    "InContextLearningMCExpectedCalibrationError",
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

    def _wrap_update(self, update: Callable[..., Any]) -> Callable[..., Any]:
        """torchmetrics' bookkeeping around ``update``, keeping what ``update`` returns (the
        per-example results), which torchmetrics' own wrapper drops."""
        returned: dict[str, Any] = {}

        def remember(*args: Any, **kwargs: Any) -> None:
            returned["value"] = update(*args, **kwargs)

        wrapped = super()._wrap_update(remember)

        @functools.wraps(update)
        def update_with_results(*args: Any, **kwargs: Any) -> Any:
            returned.clear()
            wrapped(*args, **kwargs)
            return returned.get("value")

        return update_with_results

    def _count(self, correct: int, total: int) -> None:
        self.correct = cast(torch.Tensor, self.correct) + correct
        self.total = cast(torch.Tensor, self.total) + total

    def compute(self) -> torch.Tensor:
        """The fraction of examples answered correctly."""
        return cast(torch.Tensor, self.correct) / cast(torch.Tensor, self.total)


def require_batch_keys(batch: Mapping[str, Any], keys: Sequence[str], metric: str) -> None:
    """Fail naming ``metric`` and the ``keys`` missing from ``batch`` (ValueError)."""
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

    def update(
        self, batch: Mapping[str, Any], outputs: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, list[Any]]:
        """Count each row of the batch.

        Returns:
            Per row (LLM Foundry's columns): its ``context`` tokens, the continuation as
            ``label`` tokens, the model's argmax ``output`` tokens there, and ``result``.
        """
        require_batch_keys(batch, ["continuation_indices"], type(self).__name__)
        keys = ("context", "label", "output", "result")
        per_example: dict[str, list[Any]] = {key: [] for key in keys}
        for row, positions in enumerate(batch["continuation_indices"]):
            before = positions.to(outputs.device) - 1
            predicted = outputs[row, before].argmax(dim=-1)
            targets = labels[row, before.to(labels.device)].to(predicted.device)
            per_example["context"].append(example_context(batch, row))
            per_example["label"].append(targets.cpu())
            per_example["output"].append(predicted.cpu())
            per_example["result"].append(int(bool((predicted == targets).all())))
        self._count(sum(per_example["result"]), len(batch["continuation_indices"]))
        return per_example


def example_context(batch: Mapping[str, Any], row: int) -> torch.Tensor:
    """The tokens of ``row`` before its continuation (padding left out); empty without
    ``input_ids`` (a hand-made batch may carry only what is scored)."""
    if "input_ids" not in batch:
        return torch.zeros(0, dtype=torch.long)
    ids = batch["input_ids"][row].cpu()
    end = int(batch["continuation_indices"][row][0]) if "continuation_indices" in batch else None
    mask = batch.get("attention_mask")
    keep = mask[row].cpu().bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
    return ids[:end][keep[:end]]


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

    def update(
        self, batch: Mapping[str, Any], outputs: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, list[Any]]:
        """Count each question (a ``choice_groupings`` range of rows) of the batch.

        Returns:
            Per question (LLM Foundry's columns): its ``context`` tokens, the
            ``correct_choice`` / ``selected_choice`` continuation tokens and their indices
            among its choices (``*_idx``), ``all_choices`` and ``result``.
        """
        require_batch_keys(
            batch,
            ["continuation_indices", "choice_groupings", "gold_indices"],
            type(self).__name__,
        )
        per_token = continuation_log_likelihoods(outputs, labels, batch["continuation_indices"])
        scores = [t.mean() if self.length_normalized else t.sum() for t in per_token]
        keys = ("context", "correct_choice", "correct_choice_idx", "selected_choice")
        per_example: dict[str, list[Any]] = {key: [] for key in keys}
        per_example |= {"selected_choice_idx": [], "all_choices": [], "result": []}
        for (start, end), gold in zip(
            batch["choice_groupings"], batch["gold_indices"], strict=True
        ):
            selected = int(torch.stack(scores[start:end]).argmax())
            per_example["context"].append(example_context(batch, start))
            per_example["correct_choice"].append(self._choice(batch, start + int(gold)))
            per_example["correct_choice_idx"].append(int(gold))
            per_example["selected_choice"].append(self._choice(batch, start + selected))
            per_example["selected_choice_idx"].append(selected)
            per_example["all_choices"].append(
                [self._choice(batch, row) for row in range(start, end)]
            )
            per_example["result"].append(int(selected == int(gold)))
        self._count(sum(per_example["result"]), len(batch["gold_indices"]))
        return per_example

    @staticmethod
    def _choice(batch: Mapping[str, Any], row: int) -> torch.Tensor:
        """The continuation tokens of one choice's row (empty without ``input_ids``)."""
        if "input_ids" not in batch:
            return torch.zeros(0, dtype=torch.long)
        return batch["input_ids"][row, batch["continuation_indices"][row]].cpu()


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
    """The answer part of a generation: up to the first stop match, after the last CoT delimiter.

    As in LLM Foundry the stop strings are joined into one regular expression (``a|b``), so a
    stop string with regex characters (``.``, ``?``) matches as a pattern.
    """
    stops = [stop for stop in early_stopping_criteria or () if stop]
    if stops:
        text = re.split("|".join(stops), text)[0]
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

    def update(
        self, batch: Mapping[str, Any], outputs: Sequence[str], labels: Any
    ) -> dict[str, list[Any]]:
        """Count each generated string against its row's list of accepted answers.

        Returns:
            Per row (LLM Foundry's columns): the ``cleaned_output`` compared, the accepted
            answers as given (``original_label``) and cleaned (``cleaned_label``), ``result``.
        """
        stops = batch.get("early_stopping_criteria")
        cot = batch.get("cot_delimiter")
        normalize = bool(batch.get("do_normalization", True))
        clean = normalize_answer if normalize else str.strip
        keys = ("cleaned_output", "original_label", "cleaned_label", "result")
        per_example: dict[str, list[Any]] = {key: [] for key in keys}
        for generated, answers in zip(outputs, labels, strict=True):
            answer = clean(cut_generation(generated, stops, cot))
            cleaned = sorted({clean(a) for a in answers})
            per_example["cleaned_output"].append(answer)
            per_example["original_label"].append(list(answers))
            per_example["cleaned_label"].append(cleaned)
            per_example["result"].append(int(any(answer.startswith(a) for a in cleaned)))
        self._count(sum(per_example["result"]), len(outputs))
        return per_example


class InContextLearningMultipleChoiceSumAccuracy(InContextLearningMultipleChoiceAccuracy):
    """Multiple-choice accuracy scoring each choice by its *summed* log-likelihood (which
    favours short choices); name it in a task's ``metric_names`` to use it."""

    def __init__(self, dist_sync_on_step: bool = False) -> None:
        super().__init__(dist_sync_on_step=dist_sync_on_step, length_normalized=False)


# --- Expected calibration error (ECE), as LLM Foundry defines it ---------------------------------
# Predictions fall into ``n_buckets`` equal confidence buckets; the error is the bucket-size
# weighted mean of ``|accuracy in bucket - bucket midpoint|``.


class InContextLearningExpectedCalibrationError(InContextLearningMetric):
    """Base of the ECE metrics: per-bucket counts of predictions and of right predictions.

    Args:
        dist_sync_on_step: synchronize the states on every ``forward``.
        n_buckets: how many equal-width confidence buckets split [0, 1].
    """

    def __init__(self, dist_sync_on_step: bool = False, n_buckets: int = 10) -> None:
        super().__init__(dist_sync_on_step=dist_sync_on_step)
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
        self.n_buckets = n_buckets
        self.add_state("bucket_totals", default=torch.zeros(n_buckets), dist_reduce_fx="sum")
        self.add_state("bucket_correct", default=torch.zeros(n_buckets), dist_reduce_fx="sum")

    def _record(self, confidence: float, right: bool) -> None:
        bucket = min(int(confidence * self.n_buckets), self.n_buckets - 1)
        totals = cast(torch.Tensor, self.bucket_totals)
        totals[bucket] += 1
        if right:
            cast(torch.Tensor, self.bucket_correct)[bucket] += 1

    def compute(self) -> torch.Tensor:
        """The bucket-weighted mean gap between accuracy and confidence."""
        totals = cast(torch.Tensor, self.bucket_totals)
        correct = cast(torch.Tensor, self.bucket_correct)
        result = torch.tensor(0.0, device=totals.device)
        for bucket in range(self.n_buckets):
            if totals[bucket] == 0:
                continue
            midpoint = (bucket + 0.5) / self.n_buckets
            accuracy = correct[bucket] / totals[bucket]
            result += totals[bucket] / totals.sum() * torch.abs(accuracy - midpoint)
        return result


def _continuation_probs(
    outputs: torch.Tensor, labels: torch.Tensor, row: int, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The row's probabilities at the positions predicting its continuation, and the targets."""
    before = positions.to(outputs.device) - 1
    probs = torch.softmax(outputs[row, before].float(), dim=-1)
    return probs, labels[row, before.to(labels.device)].to(probs.device)


class InContextLearningLMExpectedCalibrationError(InContextLearningExpectedCalibrationError):
    """ECE of language-modeling tasks (confidence: the least sure continuation token)."""

    def update(self, batch: Mapping[str, Any], outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Bucket every row of the batch."""
        for row, positions in enumerate(batch["continuation_indices"]):
            probs, targets = _continuation_probs(outputs, labels, row, positions)
            top = probs.max(dim=-1)
            right = bool((top.indices == targets).all())
            self._record(float(top.values.min()), right)


class InContextLearningMCExpectedCalibrationError(InContextLearningExpectedCalibrationError):
    """ECE of multiple-choice and schema tasks (confidence: best choice's share of the scores)."""

    def update(self, batch: Mapping[str, Any], outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Bucket every question of the batch."""
        scores = []
        for row, positions in enumerate(batch["continuation_indices"]):
            probs, targets = _continuation_probs(outputs, labels, row, positions)
            scores.append(float(probs.gather(-1, targets.unsqueeze(-1)).mean()))
        for (start, end), gold in zip(
            batch["choice_groupings"], batch["gold_indices"], strict=True
        ):
            choice_scores = scores[start:end]
            best = choice_scores.index(max(choice_scores))
            self._record(max(choice_scores) / sum(choice_scores), best == int(gold))


ICL_METRICS: dict[str, type[InContextLearningMetric]] = {
    cls.__name__: cls
    for cls in (
        InContextLearningLMAccuracy,
        InContextLearningMultipleChoiceAccuracy,
        InContextLearningMultipleChoiceSumAccuracy,
        InContextLearningGenerationExactMatchAccuracy,
        InContextLearningLMExpectedCalibrationError,
        InContextLearningMCExpectedCalibrationError,
    )
}

# The names LLM Foundry registers these metrics under (``metric_names`` takes either form).
METRIC_ALIASES = {
    "lm_accuracy": "InContextLearningLMAccuracy",
    "mc_accuracy": "InContextLearningMultipleChoiceAccuracy",
    "qa_accuracy": "InContextLearningGenerationExactMatchAccuracy",
    "lm_expected_calibration_error": "InContextLearningLMExpectedCalibrationError",
    "mc_expected_calibration_error": "InContextLearningMCExpectedCalibrationError",
}

for _name, _cls in ICL_METRICS.items():
    registry.metrics.register(_name, func=_cls)
for _alias, _name in METRIC_ALIASES.items():
    registry.metrics.register(_alias, func=ICL_METRICS[_name])
