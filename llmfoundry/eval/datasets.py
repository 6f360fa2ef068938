"""In-context-learning (ICL) task datasets: JSONL rows in, few-shot prompts, padded ICL batches out.

Every task type reads rows of its own shape (LLM Foundry's formats):

====================================  =========================================
``icl_task_type``                     fields of a row
====================================  =========================================
``language_modeling``                 ``context``, ``continuation``
``multiple_choice``                   ``query``, ``choices``, ``gold``
``schema``                            ``context_options``, ``continuation``, ``gold``
``generation_task_with_answers``      ``context``, ``answer``, optional ``aliases``
====================================  =========================================

A row's prompt is ``prompt_string`` followed by ``num_fewshot`` examples drawn from the *other*
rows (with ``fewshot_random_seed``: the same shots for the same row on every build), then the row
itself, joined with ``example_delimiter``; each example is ``context + continuation_delimiter +
answer`` and the row ends at its ``context + continuation_delimiter``. The prompt and the
continuation are tokenized separately (the continuation without special tokens) and the prompt
is cut from the left so that both fit ``max_seq_len``.

Batches are dicts (``mode: icl_task``, or ``generate`` for generation tasks) that
``llmfoundry.eval.metrics`` scores. A multiple-choice or schema question spans one row per
choice; the loader's batch size counts questions, and ``split_icl_batch`` keeps a question's
rows together when Composer splits a batch into microbatches.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.utils.exceptions import DatasetError, MissingFileError

__all__ = [
    "TASK_TYPE_ALIASES",
    "GenerationWithAnswersDataset",
    "ICLDataset",
    "ICLRow",
    "LanguageModelingDataset",
    "MultipleChoiceDataset",
    "SchemaDataset",
    "icl_num_samples",
    "load_icl_rows",
    "split_icl_batch",
]

# Older task files name the generation type after its first use.
TASK_TYPE_ALIASES = {"question_answering": "generation_task_with_answers"}

# Keys of a generation batch that every microbatch shares.
_SHARED_KEYS = (
    "mode",
    "generation_kwargs",
    "cot_delimiter",
    "early_stopping_criteria",
    "do_normalization",
)


@dataclass(frozen=True)
class ICLRow:
    """One JSONL row: its fields, and where it came from (for error messages)."""

    fields: Mapping[str, Any]
    source: str
    line: int

    def where(self, field: str) -> str:
        """``file, row N, field 'x'`` for an error message."""
        return f"{self.source}, row {self.line}, field '{field}'"


def load_icl_rows(dataset_uri: str) -> list[ICLRow]:
    """Read a JSONL file (one JSON object per line; blank lines skipped).

    Raises:
        MissingFileError: if the file does not exist.
        DatasetError: on a line that is not a JSON object, or a file without rows.
    """
    path = Path(dataset_uri.removeprefix("file://"))
    if not path.is_file():
        raise MissingFileError(
            f"ICL dataset_uri '{dataset_uri}' does not exist; point it at a local JSONL file"
        )
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(
                    f"{dataset_uri}, row {number}: not valid JSON ({err.msg})"
                ) from err
            if not isinstance(fields, dict):
                raise DatasetError(f"{dataset_uri}, row {number}: expected a JSON object")
            rows.append(ICLRow(fields, dataset_uri, number))
    if not rows:
        raise DatasetError(f"ICL dataset {dataset_uri} has no rows")
    return rows


@dataclass(frozen=True)
class _Example:
    """A row turned into text: the context(s) to score and the continuation(s) after them."""

    contexts: list[str]  # one per choice for schema; one otherwise
    continuations: list[str]  # one per choice for multiple choice; one otherwise
    gold: int = 0
    answers: tuple[str, ...] = ()  # generation: accepted answers


class ICLDataset(Dataset[dict[str, Any]]):
    """Shared machinery of the ICL task datasets; subclasses parse rows and collate.

    Args:
        rows: the task's rows (``load_icl_rows``), e.g. those of one category.
        tokenizer: tokenizes prompts and continuations; its pad (or EOS) id pads.
        max_seq_len: prompt plus continuation tokens of a row fit in this.
        num_fewshot: examples from the other rows put before each row.
        prompt_string: text at the very start of every prompt.
        example_delimiter: text between examples.
        continuation_delimiter: text between an example's context and its answer.
        fewshot_random_seed: seeds the choice of shots.

    Raises:
        DatasetError: on a row with a missing or malformed field, or fewer other rows than
            ``num_fewshot``.
    """

    def __init__(
        self,
        rows: Sequence[ICLRow],
        tokenizer: PreTrainedTokenizerBase,
        max_seq_len: int,
        num_fewshot: int = 0,
        prompt_string: str = "",
        example_delimiter: str = "\n",
        continuation_delimiter: str = " ",
        fewshot_random_seed: int = 1234,
    ) -> None:
        if num_fewshot < 0:
            raise ValueError(f"num_fewshot must be >= 0, got {num_fewshot}")
        if num_fewshot > len(rows) - 1:
            source = rows[0].source if rows else "the dataset"
            raise DatasetError(
                f"{source}: num_fewshot={num_fewshot} needs at least {num_fewshot + 1} rows "
                f"(shots come from the other rows) but there are {len(rows)}; lower num_fewshot"
            )
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        # transformers types the ids loosely (``int | list[int] | ...``); here they are ints.
        pad_id: Any = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
        self.pad_token_id = int(pad_id)
        self.examples = [self.parse_row(row) for row in rows]
        rng = random.Random(fewshot_random_seed)
        self.shots = [
            rng.sample([j for j in range(len(rows)) if j != i], num_fewshot)
            for i in range(len(rows))
        ]
        self.prefixes = [
            prompt_string
            + "".join(
                self.example_text(self.examples[j], continuation_delimiter) + example_delimiter
                for j in shots
            )
            for shots in self.shots
        ]
        self.continuation_delimiter = continuation_delimiter
        self.rows = list(rows)

    # --- what a subclass defines -------------------------------------------------------------
    def parse_row(self, row: ICLRow) -> _Example:
        """Check a row's fields and turn it into text."""
        raise NotImplementedError

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad a list of ``__getitem__`` results into a batch."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------
    @staticmethod
    def example_text(example: _Example, continuation_delimiter: str) -> str:
        """The text of a row used as a shot: its (gold) context, the delimiter, its answer."""
        context = example.contexts[example.gold if len(example.contexts) > 1 else 0]
        if example.answers:
            answer = example.answers[0]
        else:
            answer = example.continuations[example.gold if len(example.continuations) > 1 else 0]
        return context + continuation_delimiter + answer

    def __len__(self) -> int:
        return len(self.examples)

    def prompt(self, index: int, context: str) -> str:
        """The full prompt text of row ``index`` for one of its contexts."""
        return self.prefixes[index] + context + self.continuation_delimiter

    def encode_pair(
        self, index: int, context: str, continuation: str
    ) -> tuple[list[int], list[int]]:
        """Prompt ids (left-truncated) and continuation ids that together fit ``max_seq_len``."""
        prompt_ids = list(self.tokenizer(self.prompt(index, context))["input_ids"])
        continuation_ids = list(self.tokenizer(continuation, add_special_tokens=False)["input_ids"])
        row = self.rows[index]
        if not continuation_ids:
            raise DatasetError(f"{row.where('continuation')}: the continuation is empty")
        room = self.max_seq_len - len(continuation_ids)
        if room < 1:
            raise DatasetError(
                f"{row.where('continuation')}: the continuation has {len(continuation_ids)} tokens, "
                f"leaving no room for the context in max_seq_len={self.max_seq_len}; raise max_seq_len"
            )
        if not prompt_ids:
            raise DatasetError(f"{row.where('context')}: the prompt is empty")
        return prompt_ids[-room:], continuation_ids


def _field(row: ICLRow, name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in row.fields:
        raise DatasetError(f"{row.source}, row {row.line}: missing field '{name}'")
    value = row.fields[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join(k.__name__ for k in kinds)
        raise DatasetError(f"{row.where(name)}: expected {expected}, got {type(value).__name__}")
    return value


def _string_list(row: ICLRow, name: str) -> list[str]:
    values = _field(row, name, list)
    if not values:
        raise DatasetError(f"{row.where(name)}: the list is empty")
    if not all(isinstance(v, str) for v in values):
        raise DatasetError(f"{row.where(name)}: every entry must be a string")
    return values


def _gold(row: ICLRow, num_options: int, options_field: str) -> int:
    gold = _field(row, "gold", int)
    if not 0 <= gold < num_options:
        raise DatasetError(
            f"{row.where('gold')}: gold={gold} is out of range for {num_options} {options_field} "
            f"(0..{num_options - 1})"
        )
    return gold


def _pad(sequences: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    padded = [
        ([value] * (width - len(s)) + s) if left else (s + [value] * (width - len(s)))
        for s in sequences
    ]
    return torch.tensor(padded, dtype=torch.long)


class _LogLikelihoodDataset(ICLDataset):
    """Tasks scored from logits: each item is one or more (prompt, continuation) rows."""

    def encoded_rows(self, index: int) -> list[tuple[list[int], list[int]]]:
        example = self.examples[index]
        if len(example.contexts) > 1:  # schema: each context option before the one continuation
            return [self.encode_pair(index, c, example.continuations[0]) for c in example.contexts]
        return [self.encode_pair(index, example.contexts[0], c) for c in example.continuations]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"rows": self.encoded_rows(index), "gold": self.examples[index].gold}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Right-padded rows, ``continuation_indices``, and each question's rows and gold."""
        sequences: list[list[int]] = []
        label_rows: list[list[int]] = []
        continuation_indices: list[torch.Tensor] = []
        groupings: list[tuple[int, int]] = []
        for item in items:
            start = len(sequences)
            for prompt_ids, continuation_ids in item["rows"]:
                sequences.append(prompt_ids + continuation_ids)
                label_rows.append([-100] * len(prompt_ids) + continuation_ids)
                continuation_indices.append(
                    torch.arange(len(prompt_ids), len(prompt_ids) + len(continuation_ids))
                )
            groupings.append((start, len(sequences)))
        input_ids = _pad(sequences, self.pad_token_id)
        attention_mask = _pad([[1] * len(s) for s in sequences], 0).bool()
        return {
            "mode": "icl_task",
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": _pad(label_rows, -100),
            "continuation_indices": continuation_indices,
            "choice_groupings": groupings,
            "gold_indices": [item["gold"] for item in items],
        }


class LanguageModelingDataset(_LogLikelihoodDataset):
    """``language_modeling`` rows: ``context`` and the ``continuation`` to predict exactly."""

    def parse_row(self, row: ICLRow) -> _Example:
        """``context`` and ``continuation`` strings."""
        return _Example([_field(row, "context", str)], [_field(row, "continuation", str)])


class MultipleChoiceDataset(_LogLikelihoodDataset):
    """``multiple_choice`` rows: a ``query``, its ``choices`` and the index ``gold`` of the right one."""

    def parse_row(self, row: ICLRow) -> _Example:
        """``query`` string, non-empty ``choices`` list and an in-range ``gold``."""
        query = _field(row, "query", str)
        choices = _string_list(row, "choices")
        return _Example([query], choices, _gold(row, len(choices), "choices"))


class SchemaDataset(_LogLikelihoodDataset):
    """``schema`` rows: ``context_options``, the shared ``continuation`` and the ``gold`` option.

    Each option is scored by the likelihood of the continuation after it.
    """

    def parse_row(self, row: ICLRow) -> _Example:
        """Non-empty ``context_options``, a ``continuation`` string and an in-range ``gold``."""
        options = _string_list(row, "context_options")
        continuation = _field(row, "continuation", str)
        return _Example(options, [continuation], _gold(row, len(options), "context_options"))


class GenerationWithAnswersDataset(ICLDataset):
    """``generation_task_with_answers`` rows: ``context``, ``answer`` and optional ``aliases``.

    Batches have ``mode: generate``; the model generates greedily (unless ``generation_kwargs``
    say otherwise) up to ``max_new_tokens``, by default the longest answer or alias in tokens.

    Args:
        cot_delimiter: the answer is what follows the last occurrence of this in the output.
        early_stopping_criteria: the output is cut at the first of these strings.
        do_normalization: compare normalized strings (see ``normalize_answer``).
        generation_kwargs: extra ``generate`` arguments (override the defaults).
        **kwargs: ``ICLDataset``'s arguments.
    """

    def __init__(
        self,
        rows: Sequence[ICLRow],
        tokenizer: PreTrainedTokenizerBase,
        max_seq_len: int,
        cot_delimiter: str = "",
        early_stopping_criteria: Sequence[str] | None = None,
        do_normalization: bool = True,
        generation_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(rows, tokenizer, max_seq_len, **kwargs)
        self.cot_delimiter = cot_delimiter
        self.early_stopping_criteria = list(early_stopping_criteria or [])
        self.do_normalization = do_normalization
        longest_answer = max(
            len(tokenizer(answer, add_special_tokens=False)["input_ids"])
            for example in self.examples
            for answer in example.answers
        )
        self.generation_kwargs: dict[str, Any] = {
            "max_new_tokens": max(1, longest_answer),
            "pad_token_id": self.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "do_sample": False,
            "use_cache": True,
            **(generation_kwargs or {}),
        }

    def parse_row(self, row: ICLRow) -> _Example:
        """``context`` and ``answer`` strings; ``aliases`` (strings) are also accepted."""
        context = _field(row, "context", str)
        answer = _field(row, "answer", str)
        aliases = _string_list(row, "aliases") if "aliases" in row.fields else []
        answers = tuple(dict.fromkeys([answer, *aliases]))
        return _Example([context], [answer], answers=answers)

    def __getitem__(self, index: int) -> dict[str, Any]:
        prompt_ids = list(
            self.tokenizer(self.prompt(index, self.examples[index].contexts[0]))["input_ids"]
        )
        room = self.max_seq_len - int(self.generation_kwargs["max_new_tokens"])
        if room < 1:
            raise DatasetError(
                f"{self.rows[index].where('answer')}: max_new_tokens leaves no room for the "
                f"prompt in max_seq_len={self.max_seq_len}; raise max_seq_len"
            )
        return {"prompt": prompt_ids[-room:], "answers": list(self.examples[index].answers)}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Left-padded prompts, the accepted answers as ``labels``, and generation settings."""
        prompts = [item["prompt"] for item in items]
        return {
            "mode": "generate",
            "input_ids": _pad(prompts, self.pad_token_id, left=True),
            "attention_mask": _pad([[1] * len(p) for p in prompts], 0, left=True).bool(),
            "labels": [item["answers"] for item in items],
            "generation_kwargs": dict(self.generation_kwargs),
            "cot_delimiter": self.cot_delimiter,
            "early_stopping_criteria": list(self.early_stopping_criteria),
            "do_normalization": self.do_normalization,
        }


def icl_num_samples(batch: Mapping[str, Any]) -> int:
    """Examples in a batch: questions for multiple choice/schema, rows otherwise."""
    if "gold_indices" in batch:
        return len(batch["gold_indices"])
    return int(batch["input_ids"].shape[0])


def split_icl_batch(batch: Mapping[str, Any], microbatch_size: int | float) -> list[dict[str, Any]]:
    """Split a batch into microbatches of ``microbatch_size`` examples (questions stay whole).

    Row-aligned entries (tensors, ``continuation_indices``, generation ``labels``) are sliced by
    rows; ``choice_groupings`` are re-based on each microbatch's first row; generation settings
    are shared.
    """
    size = max(1, int(microbatch_size))
    if "choice_groupings" in batch:
        groupings = list(batch["choice_groupings"])
        spans = [
            (
                groupings[i][0],
                groupings[min(i + size, len(groupings)) - 1][1],
                i,
                min(i + size, len(groupings)),
            )
            for i in range(0, len(groupings), size)
        ]
    else:
        rows = int(batch["input_ids"].shape[0])
        spans = [(i, min(i + size, rows), i, min(i + size, rows)) for i in range(0, rows, size)]
    chunks = []
    for row_start, row_end, q_start, q_end in spans:
        chunk: dict[str, Any] = {}
        for key, value in batch.items():
            if key in _SHARED_KEYS:
                chunk[key] = value
            elif key == "choice_groupings":
                chunk[key] = [(s - row_start, e - row_start) for s, e in value[q_start:q_end]]
            elif key == "gold_indices":
                chunk[key] = value[q_start:q_end]
            else:  # row-aligned
                chunk[key] = value[row_start:row_end]
        chunks.append(chunk)
    return chunks


TASK_DATASETS: dict[str, type[ICLDataset]] = {
    "language_modeling": LanguageModelingDataset,
    "multiple_choice": MultipleChoiceDataset,
    "schema": SchemaDataset,
    "generation_task_with_answers": GenerationWithAnswersDataset,
}

for _task_type, _dataset_cls in TASK_DATASETS.items():
    registry.icl_datasets.register(_task_type, func=_dataset_cls)
