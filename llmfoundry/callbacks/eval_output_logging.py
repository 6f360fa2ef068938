"""``eval_output_logging``: after each evaluation, a table per evaluator of what the model saw and scored.

For a language-modeling eval batch (``eval_loader`` → evaluator ``eval``, ``eval_loaders`` →
``eval/<label>``) each sample becomes one row:

* ``input``: the decoded input text, padding left out and special tokens kept (with
  ``log_tokenized: true``, ``input_ids``: the token ids instead);
* ``loss``: the mean next-token cross-entropy over the sample's scored labels (not -100),
  computed from the logits of the eval step itself (the model is not run again);
* ``label_tokens``: how many labels were scored;
* ``outputs`` (LLM Foundry's ``log_output_text``; by default whenever the model has a
  tokenizer): the model's most likely token at each scored position, decoded, i.e. what it
  predicted where the labels were;
* with LLM Foundry's ``log_tokens: true`` also ``input_tokens`` (the input's token ids,
  padding left out) and ``output_tokens`` (the predicted ids behind ``outputs``).

Weighting each row's ``loss`` by its ``label_tokens`` gives back the evaluator's
``LanguageCrossEntropy``. Rows of every rank are gathered, and global rank 0 logs
``eval_outputs/ba{batch}/{evaluator}`` through ``logger.log_table``.

Extension point (ICL tasks): rows are dicts ``{column: value}`` and a table's columns are the
union of its rows' keys, in first-seen order. Two hooks produce them:

* :meth:`EvalOutputLogging.rows_after_forward` runs once per microbatch right after the eval
  forward (``Event.EVAL_AFTER_FORWARD``), where ``state.batch`` is the microbatch and
  ``state.outputs`` what ``eval_forward`` returned; it builds the LM rows above for batches
  without a ``mode`` key;
* :meth:`EvalOutputLogging.rows_at_batch_end` runs at ``Event.EVAL_BATCH_END``, after the
  metrics were updated, where ``state.metric_outputs`` holds what ``update_metric`` returned.
  An ICL batch (``mode: icl_task`` or ``generate``) gives one row per example (a question, for
  multiple choice): ``input`` (the example's context, decoded; its token ids with
  ``log_tokenized``), every per-example column the task's metric returned, under LLM
  Foundry's names (``result`` and ``metric_name``; ``context``/``label``/``output`` for
  language modeling; ``correct_choice``/``selected_choice`` (+ ``_idx``)/``all_choices`` for
  multiple choice; ``cleaned_output``/``original_label``/``cleaned_label`` for generation;
  token ids decoded to text), for generation tasks the generated text (``outputs``), and
  ``run_name``. With
  microbatching only the last microbatch is visible at that event, so evaluate ICL tasks
  with whole batches to see every example.

Known limit: when a distributed sampler pads the last batch with repeated samples and a
microbatch holds just one sample, Composer still runs the forward on it, so that sample can
appear twice.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from transformers import PreTrainedTokenizerBase

from llmfoundry.eval.metrics import example_context
from llmfoundry.utils.config_checks import AllOrCount, check_arguments
from llmfoundry.utils.constants import IGNORE_INDEX
from llmfoundry.utils.exceptions import ConfigError

log = logging.getLogger(__name__)

KEY = "callbacks.eval_output_logging"
TABLE_PREFIX = "eval_outputs"
SUBSET_SEED = 0

Row = dict[str, Any]


def table_name(batch: int, evaluator_label: str) -> str:
    """The table's name: ``eval_outputs/ba{batch}/{evaluator_label}``."""
    return f"{TABLE_PREFIX}/ba{batch}/{evaluator_label}"


def per_sample_losses(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy per sample over the targets that are not -100, and their count.

    Computed in fp32 one sample at a time, so the extra memory is one sample's logits.

    Args:
        logits: ``(batch, seq, vocab)``, position ``t`` scored against ``targets[:, t]``.
        targets: ``(batch, seq)`` token ids, -100 where not scored.

    Returns:
        ``(losses, counts)``, both ``(batch,)`` on the CPU; a sample without scored targets
        has loss NaN.
    """
    sums = []
    for sample_logits, sample_targets in zip(logits, targets, strict=True):
        sums.append(
            F.cross_entropy(
                sample_logits.float(),
                sample_targets.to(sample_logits.device),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        )
    counts = (targets != IGNORE_INDEX).sum(dim=1).cpu()
    total = torch.stack(sums).cpu()
    losses = torch.where(counts > 0, total / counts.clamp(min=1), torch.nan)
    return losses, counts


def deterministic_subset(rows: list[Row], size: int) -> list[Row]:
    """``size`` rows picked at random with a fixed seed, in their original order (all if ``size`` is -1).

    The same number of rows gives the same picks at every evaluation, so the same samples
    can be followed through training.
    """
    if size < 0 or size >= len(rows):
        return rows
    picked = sorted(random.Random(SUBSET_SEED).sample(range(len(rows)), size))
    return [rows[i] for i in picked]


def rows_to_table(rows: list[Row]) -> tuple[list[str], list[list[Any]]]:
    """Columns (union of the rows' keys, first seen first) and row values (None where missing)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns, [[row.get(column) for column in columns] for row in rows]


def _unwrapped(state: State) -> Any:
    return state.model.module if state.is_model_ddp else state.model


def _tokenizer_of(state: State) -> PreTrainedTokenizerBase | None:
    return cast(PreTrainedTokenizerBase | None, getattr(_unwrapped(state), "tokenizer", None))


def _unpadded_ids(batch: Mapping[str, Any]) -> list[list[int]]:
    """Each sample's input ids without the padding (where ``attention_mask`` is 0)."""
    input_ids = cast(torch.Tensor, batch["input_ids"]).cpu()
    mask = batch.get("attention_mask")
    keep = (
        cast(torch.Tensor, mask).cpu().bool()
        if mask is not None
        else torch.ones_like(input_ids, dtype=torch.bool)
    )
    return [row[row_keep].tolist() for row, row_keep in zip(input_ids, keep, strict=True)]


def _predictions(logits: torch.Tensor, targets: torch.Tensor) -> list[list[int]]:
    """Per sample, the most likely token at each position whose target is scored (not -100)."""
    predicted = logits.argmax(dim=-1).cpu()
    scored = (targets != IGNORE_INDEX).cpu()
    return [row[keep].tolist() for row, keep in zip(predicted, scored, strict=True)]


def _logits_of(outputs: Any) -> torch.Tensor | None:
    """The logits in what ``eval_forward`` returned: the tensor itself or its ``logits``."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("logits"), torch.Tensor):
        return outputs["logits"]
    logits = getattr(outputs, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else None


def _targets_of(model: Any, batch: Mapping[str, Any], logits: torch.Tensor) -> torch.Tensor:
    """What the metrics score the logits against.

    Our models' ``eval_forward`` stores them in ``model.labels`` (the labels shifted by one);
    otherwise they are derived from the batch's labels the same way.
    """
    stored = getattr(model, "labels", None)
    if isinstance(stored, torch.Tensor) and stored.shape == logits.shape[:2]:
        return stored
    labels = cast(torch.Tensor, batch["labels"])
    if not getattr(model, "shift_labels", False):
        return labels
    targets = torch.roll(labels, shifts=-1, dims=-1)
    targets[..., -1] = IGNORE_INDEX
    return targets


def icl_contexts(batch: Mapping[str, Any], count: int) -> list[torch.Tensor]:
    """Each example's context tokens (:func:`~llmfoundry.eval.metrics.example_context`): its
    row, or a multiple-choice question's first choice row, before the continuation."""
    groupings = batch.get("choice_groupings")
    first_rows = [start for start, _ in groupings] if groupings else list(range(count))
    return [example_context(batch, row) for row in first_rows[:count]]


def _readable(value: Any, tokenizer: PreTrainedTokenizerBase | None) -> Any:
    """A per-example metric value for the table: token ids (a tensor, or a list of them)
    decoded when there is a tokenizer."""
    if isinstance(value, torch.Tensor):
        ids = value.tolist()
        return tokenizer.decode(ids, skip_special_tokens=False) if tokenizer is not None else ids
    if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
        return [_readable(item, tokenizer) for item in value]
    return value


class EvalOutputLogging(Callback):
    """Log a table of each evaluator's samples, per-sample losses and label counts after every eval.

    Args:
        log_tokenized: log the input's token ids (column ``input_ids``) instead of its
            decoded text (column ``input``).
        subset_sample: keep this many rows per evaluator, picked at random with a fixed seed
            (the same picks at every evaluation); -1 keeps all.
        log_tokens: also log token ids: the input's (``input_tokens``) and the predicted
            ones (``output_tokens``).
        log_output_text: log the predictions as text (``outputs``): True, False, or None
            (default) for whenever the model has a tokenizer.

    Raises:
        ConfigError: if ``subset_sample`` is neither -1 nor positive; when evaluation starts,
            if ``log_output_text`` is true and the model has no tokenizer.
    """

    def __init__(
        self,
        log_tokenized: bool = False,
        subset_sample: AllOrCount = -1,
        log_tokens: bool = False,
        log_output_text: bool | None = None,
    ) -> None:
        check_arguments(EvalOutputLogging, f"{KEY}.", subset_sample=subset_sample)
        self.log_tokenized = log_tokenized
        self.subset_sample = subset_sample
        self.log_tokens = log_tokens
        self.log_output_text = log_output_text
        self._rows: dict[str, list[Row]] = {}
        self._warned: set[str] = set()

    def eval_start(self, state: State, logger: Logger) -> None:
        del logger
        if self.log_output_text and _tokenizer_of(state) is None:
            raise ConfigError(
                f"{KEY}.log_output_text is true, but the model has no tokenizer to decode its "
                "outputs with; give the model a tokenizer or leave log_output_text out"
            )
        self._rows[self._label(state)] = []

    def eval_after_forward(self, state: State, logger: Logger) -> None:
        del logger
        self._add(state, self.rows_after_forward(state))

    def eval_batch_end(self, state: State, logger: Logger) -> None:
        del logger
        self._add(state, self.rows_at_batch_end(state))

    def eval_end(self, state: State, logger: Logger) -> None:
        """Gather the evaluator's rows from every rank; rank 0 logs the table."""
        label = self._label(state)
        local_rows = self._rows.pop(label, [])
        gathered = dist.all_gather_object(local_rows)
        if dist.get_global_rank() != 0:
            return
        rows = [row for rank_rows in gathered for row in rank_rows]
        if not rows:
            log.warning("eval_output_logging: evaluator %s produced no rows to log", label)
            return
        columns, values = rows_to_table(deterministic_subset(rows, self.subset_sample))
        logger.log_table(
            columns=columns, rows=values, name=table_name(int(state.timestamp.batch), label)
        )

    def rows_after_forward(self, state: State) -> list[Row]:
        """Rows for the microbatch just evaluated: one per sample of a language-modeling batch.

        A batch with a ``mode`` key (ICL) or without ``labels`` or logits gives no rows here.
        """
        batch = state.batch
        if not isinstance(batch, Mapping) or "mode" in batch or "labels" not in batch:
            return []
        logits = _logits_of(state.outputs)
        if logits is None or logits.dim() != 3:
            return []
        targets = _targets_of(_unwrapped(state), batch, logits)
        losses, counts = per_sample_losses(logits, targets)
        column, inputs = self._inputs(state, _unpadded_ids(batch))
        rows: list[Row] = [
            {column: value, "loss": float(loss), "label_tokens": int(count)}
            for value, loss, count in zip(inputs, losses.tolist(), counts.tolist(), strict=True)
        ]
        tokenizer = _tokenizer_of(state)
        with_text = self.log_output_text is not False and tokenizer is not None
        if with_text or self.log_tokens:
            predicted = _predictions(logits, targets)
            for row, ids in zip(rows, predicted, strict=True):
                if with_text:
                    assert tokenizer is not None
                    row["outputs"] = tokenizer.decode(ids, skip_special_tokens=False)
                if self.log_tokens:
                    row["output_tokens"] = ids
        if self.log_tokens:
            for row, ids in zip(rows, _unpadded_ids(batch), strict=True):
                row["input_tokens"] = ids
        return rows

    def rows_at_batch_end(self, state: State) -> list[Row]:
        """Rows of an ICL batch, one per example, from ``state.metric_outputs`` (see the module
        docstring); none for other batches or metrics that return no per-example results."""
        batch, results = state.batch, state.metric_outputs or {}
        if not isinstance(batch, Mapping) or "mode" not in batch or not results.get("result"):
            return []
        count = len(results["result"])
        tokenizer = _tokenizer_of(state)
        # The metric's own context column when it returned one (log-likelihood tasks).
        contexts = results.get("context") or icl_contexts(batch, count)
        column, contexts = self._inputs(state, [ids.tolist() for ids in contexts[:count]])
        rows: list[Row] = [{column: context} for context in contexts]
        for key, values in results.items():
            for row, value in zip(rows, values[:count], strict=False):
                row[key] = _readable(value, tokenizer)
        if batch["mode"] == "generate" and self.log_output_text is not False:
            for row, generated in zip(rows, state.outputs or [], strict=False):
                row["outputs"] = generated
        for row in rows:
            row["run_name"] = state.run_name
        return rows

    def _inputs(self, state: State, ids: list[list[int]]) -> tuple[str, list[Any]]:
        """The input column's name and, per sample, its (unpadded) token ids or decoded text."""
        tokenizer = _tokenizer_of(state)
        if self.log_tokenized or tokenizer is None:
            if tokenizer is None and not self.log_tokenized:
                self._warn_once(state, "the model has no tokenizer: logging token ids")
            return "input_ids", ids
        return "input", tokenizer.batch_decode(ids, skip_special_tokens=False)

    def _add(self, state: State, rows: list[Row]) -> None:
        self._rows.setdefault(self._label(state), []).extend(rows)

    def _warn_once(self, state: State, message: str) -> None:
        label = self._label(state)
        if label not in self._warned:
            self._warned.add(label)
            log.warning("eval_output_logging (%s): %s", label, message)

    @staticmethod
    def _label(state: State) -> str:
        return str(state.dataloader_label)
