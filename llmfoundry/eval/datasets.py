"""In-context-learning (ICL) task datasets: rows in, LLM Foundry's prompts, padded ICL batches out.

Every task type reads rows of its own shape (LLM Foundry's formats):

====================================  =========================================
``icl_task_type``                     fields of a row
====================================  =========================================
``language_modeling``                 ``context``, ``continuation``
``multiple_choice``                   ``query``, ``choices``, ``gold``
``schema``                            ``context_options``, ``continuation``, ``gold``
``generation_task_with_answers``      ``context``, ``answer``, optional ``aliases``,
                                      optional ``chain_of_thought``
``code_evaluation``                   ``prompt``, ``entry_point``, ``test_inputs``,
                                      ``test_outputs``, ``language``,
                                      ``canonical_solution`` (``llmfoundry.eval.code_eval``)
====================================  =========================================

The prompt text and its tokenization follow ``llmfoundry.eval.prompts`` (LLM Foundry 0.22's
rules); a prompt is cut from the left so that it and its continuation fit ``max_seq_len``.
Batches are dicts (``mode: icl_task``, or ``generate`` for generation tasks) that
``llmfoundry.eval.metrics`` scores. Rows are padded to the longest in the batch (not to
``max_seq_len``) and the attention mask is ``input_ids != pad id``, as in LLM Foundry. A
multiple-choice or schema question spans one row per choice; ``split_icl_batch`` keeps a
question's rows together when Composer splits a batch into microbatches.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.eval.prompts import PromptStyle, fewshot_indices, needs_prefix_space, strip_fields
from llmfoundry.eval.sources import ICLRow, require, require_gold, require_strings
from llmfoundry.utils.exceptions import DatasetError
from llmfoundry.utils.tokenizer_utils import pad_token_id_of

__all__ = [
    "TASK_DATASETS",
    "TASK_TYPE_ALIASES",
    "ICLDataset",
    "ICLRow",
    "LanguageModelingDataset",
    "MultipleChoiceDataset",
    "SchemaDataset",
    "encode_unique",
    "icl_num_samples",
    "pad_sequences",
    "require",
    "require_gold",
    "require_strings",
    "split_icl_batch",
]

logger = logging.getLogger(__name__)

# Older task files name the generation type after its first use.
TASK_TYPE_ALIASES = {"question_answering": "generation_task_with_answers"}

# Keys of a generation batch that every microbatch shares.
_SHARED_KEYS = (
    "mode",
    "generation_kwargs",
    "cot_delimiter",
    "early_stopping_criteria",
    "do_normalization",
    "pass_at_k",
    "generations_per_sample",
)


@dataclass
class Example:
    """A parsed row: the texts a task type needs (see each dataset's ``parse_row``)."""

    fields: dict[str, Any]
    gold: int = 0
    answers: list[str] = field(default_factory=list)


class ICLDataset(Dataset[dict[str, Any]]):
    """Shared machinery of the ICL task datasets: parsing, few-shot preambles, tokenization.

    Args:
        rows: the task's rows (``llmfoundry.eval.sources.read_task_rows``), e.g. of one category.
        tokenizer: tokenizes prompts and continuations.
        max_seq_len: prompt plus continuation tokens of a row fit in this.
        pad_tok_id: pads batches (default: the tokenizer's pad id, else its EOS id).
        num_fewshot: examples from other rows put before each row.
        fewshot_random_seed: seeds the choice of shots.
        prompt_string: text at the very start of every prompt.
        example_delimiter: text before each example that follows other text.
        continuation_delimiter: text between an example's context and its answer.
        prelimiter: text before each example's context (LLM Foundry's ``prelimiter``, also
            ``question_prelimiter``).
        strip_dataset: strip the rows' strings and the prompt's trailing whitespace.

    Raises:
        DatasetError: on a row with a missing or malformed field (naming file, row and field).
        ValueError: if there is no pad id to pad with.
    """

    # Task keys (``ICLTaskConfig`` fields) this type takes beyond the common ones.
    task_keys: tuple[str, ...] = ()
    # The row field a prompt ends with (before the continuation delimiter).
    context_key = "context"

    def __init__(
        self,
        rows: Sequence[ICLRow],
        tokenizer: PreTrainedTokenizerBase,
        max_seq_len: int,
        pad_tok_id: int | None = None,
        num_fewshot: int = 0,
        fewshot_random_seed: int = 1234,
        prompt_string: str = "",
        example_delimiter: str = "\n",
        continuation_delimiter: str = " ",
        prelimiter: str = "",
        strip_dataset: bool = True,
    ) -> None:
        if num_fewshot < 0:
            raise ValueError(f"num_fewshot must be >= 0, got {num_fewshot}")
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.pad_token_id = pad_token_id_of(tokenizer, pad_tok_id, fix="set pad_tok_id in the task")
        self.style = PromptStyle(
            prompt_string,
            example_delimiter,
            continuation_delimiter,
            prelimiter,
            strip_dataset,
            needs_prefix_space(tokenizer),
        )
        self.rows = list(rows)
        if num_fewshot > len(self.rows) - 1 and self.rows:
            logger.warning(
                "%s: num_fewshot=%d but the task has %d rows; each prompt gets the %d other rows "
                "(lower num_fewshot, or add rows)",
                self.rows[0].source,
                num_fewshot,
                len(self.rows),
                len(self.rows) - 1,
            )
        self.examples = [
            self.parse_row(row, strip_fields(row.fields) if strip_dataset else dict(row.fields))
            for row in self.rows
        ]
        self.preambles = self._preambles(num_fewshot, fewshot_random_seed)
        self.order = list(range(len(self.rows)))

    # --- what a subclass defines -------------------------------------------------------------
    def parse_row(self, row: ICLRow, fields: dict[str, Any]) -> Example:
        """Check a row's (stripped) fields and keep what the task needs."""
        raise NotImplementedError

    def shot_answer(self, example: Example) -> str:
        """The answer ``example`` shows as a shot, after its context and delimiter."""
        raise NotImplementedError

    def scored_texts(self, example: Example) -> list[str]:
        """The continuations scored (or answers accepted) after ``example``'s context."""
        raise NotImplementedError

    def shot_text(self, example: Example, preceded: bool) -> str:
        """The text of ``example`` used as a shot: its ``context_key`` field with the
        delimiters, then :meth:`shot_answer`."""
        context = self.style.context(example.fields[self.context_key], preceded)
        return context + self.shot_answer(example)

    def row_texts(self, index: int) -> tuple[list[str], list[str]]:
        """Row ``index``'s contexts (appended to its preamble) and scored continuations: the
        ``context_key`` field as a prompt ends it, and :meth:`scored_texts`."""
        example, preceded = self.examples[index], len(self.preambles[index]) > 0
        context = self.style.final_context(example.fields[self.context_key], preceded)
        return [context], self.scored_texts(example)

    def item(self, index: int) -> dict[str, Any]:
        """What ``__getitem__`` returns for row ``index`` (before reordering)."""
        raise NotImplementedError

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad a list of ``__getitem__`` results into a batch."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------
    def _preambles(self, num_fewshot: int, seed: int) -> list[str]:
        rng = random.Random(seed)
        preambles = []
        for index in range(len(self.examples)):
            text = self.style.prompt_string
            if num_fewshot > 0:
                for shot in fewshot_indices(len(self.examples), num_fewshot, index, rng):
                    text += self.shot_text(self.examples[shot], preceded=len(text) > 0)
            preambles.append(text)
        return preambles

    def prompt_texts(self, index: int) -> tuple[str, list[str], list[str]]:
        """Row ``index``'s preamble, its contexts and its scored continuations, as text."""
        contexts, continuations = self.row_texts(index)
        return self.preambles[index], contexts, continuations

    def encode_preambles(self) -> list[list[int]]:
        """Each row's preamble ids: with special tokens, a trailing EOS dropped."""
        eos = self.tokenizer.eos_token_id
        encoded = encode_unique(self.tokenizer, self.preambles, add_special_tokens=True)
        return [
            ids[:-1] if eos is not None and len(ids) > 1 and ids[-1] == eos else ids
            for ids in encoded
        ]

    def encode_prompts(self, room: int) -> list[list[int]]:
        """Each row's preamble and context ids (the first text of ``row_texts``), cut from the
        left to at most ``room`` tokens: the prompts of the generation tasks."""
        preambles = self.encode_preambles()
        contexts = [self.row_texts(i)[0][0] for i in range(len(self.examples))]
        encoded = encode_unique(self.tokenizer, contexts, add_special_tokens=False)
        return [
            trim_context(preambles[i] + encoded[i], 0, room, self.rows[i])
            for i in range(len(self.examples))
        ]

    def lengths(self) -> list[int] | None:
        """Each row's length in tokens, for serving rows by length; None keeps file order."""
        return None

    def sort_by_length(self, lengths: Sequence[int], keep_first: int | None = None) -> None:
        """Serve rows longest first (less padding per batch). With ``keep_first``, the first
        ``keep_first`` rows stay the first served (sorted among themselves), so a subset of
        batches covers the same rows as in file order."""
        split = len(self.order) if keep_first is None else min(keep_first, len(self.order))
        head = sorted(range(split), key=lambda i: -lengths[i])
        tail = sorted(range(split, len(self.order)), key=lambda i: -lengths[i])
        self.order = head + tail

    def loader_batch_size(self, batch_size: int) -> int:
        """Rows of the file per batch for a configured ``batch_size`` (LLM Foundry's rule)."""
        return batch_size

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(self.order[index])


def encode_unique(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], add_special_tokens: bool
) -> list[list[int]]:
    """Token ids of each text, tokenizing each distinct text once (in one batched call)."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return []
    encoded = tokenizer(unique, add_special_tokens=add_special_tokens)["input_ids"]
    by_text = {text: list(ids) for text, ids in zip(unique, encoded, strict=True)}
    return [by_text[text] for text in texts]


def pad_sequences(sequences: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    """Pad to the longest sequence, on the right (or the left)."""
    width = max(len(s) for s in sequences)
    padded = [
        ([value] * (width - len(s)) + s) if left else (s + [value] * (width - len(s)))
        for s in sequences
    ]
    return torch.tensor(padded, dtype=torch.long)


def trim_context(
    context: list[int], continuation_len: int, max_seq_len: int, row: ICLRow
) -> list[int]:
    """Cut ``context`` from the left so that it and the continuation fit ``max_seq_len``."""
    if len(context) + continuation_len <= max_seq_len:
        return context
    room = max_seq_len - continuation_len
    if room < 1:
        raise DatasetError(
            f"{row.source}, row {row.line}: the continuation has {continuation_len} tokens, "
            f"leaving no room for the context in max_seq_len={max_seq_len}; raise max_seq_len"
        )
    return context[-room:]


class _LogLikelihoodDataset(ICLDataset):
    """Tasks scored from logits: each row is one or more (prompt, continuation) pairs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.encoded = self._encode()

    def pairs(self, index: int) -> list[tuple[str, str]]:
        """Row ``index``'s (context, continuation) texts, one per scored sequence."""
        contexts, continuations = self.row_texts(index)
        if len(contexts) > 1:  # schema: each context option before the one continuation
            return [(c, continuations[0]) for c in contexts]
        return [(contexts[0], c) for c in continuations]

    def _encode(self) -> list[list[tuple[list[int], list[int]]]]:
        preambles = self.encode_preambles()
        pairs = [self.pairs(i) for i in range(len(self.examples))]
        flat = [pair for row_pairs in pairs for pair in row_pairs]
        contexts = encode_unique(self.tokenizer, [c for c, _ in flat], add_special_tokens=False)
        continuations = encode_unique(
            self.tokenizer, [c for _, c in flat], add_special_tokens=False
        )
        encoded: list[list[tuple[list[int], list[int]]]] = []
        position = 0
        for index, row_pairs in enumerate(pairs):
            row = self.rows[index]
            encoded_row = []
            for _ in row_pairs:
                continuation = continuations[position]
                if not continuation:
                    raise DatasetError(f"{row.where('continuation')}: the continuation is empty")
                context = preambles[index] + contexts[position]
                encoded_row.append(
                    (trim_context(context, len(continuation), self.max_seq_len, row), continuation)
                )
                position += 1
            encoded.append(encoded_row)
        return encoded

    def lengths(self) -> list[int] | None:
        """Each row's longest sequence in tokens (scores do not depend on the batch)."""
        return [max(len(c) + len(t) for c, t in row) for row in self.encoded]

    def item(self, index: int) -> dict[str, Any]:
        return {"rows": self.encoded[index], "gold": self.examples[index].gold}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Right-padded rows, ``continuation_indices``, and each question's rows and gold."""
        sequences: list[list[int]] = []
        continuation_indices: list[torch.Tensor] = []
        groupings: list[tuple[int, int]] = []
        for item in items:
            start = len(sequences)
            for prompt_ids, continuation_ids in item["rows"]:
                sequences.append(prompt_ids + continuation_ids)
                continuation_indices.append(
                    torch.arange(len(prompt_ids), len(prompt_ids) + len(continuation_ids))
                )
            groupings.append((start, len(sequences)))
        input_ids = pad_sequences(sequences, self.pad_token_id)
        return {
            "mode": "icl_task",
            "input_ids": input_ids,
            "attention_mask": input_ids != self.pad_token_id,
            "labels": input_ids.clone(),
            "continuation_indices": continuation_indices,
            "choice_groupings": groupings,
            "gold_indices": [item["gold"] for item in items],
        }


class LanguageModelingDataset(_LogLikelihoodDataset):
    """``language_modeling`` rows: ``context`` and the ``continuation`` to predict exactly."""

    def parse_row(self, row: ICLRow, fields: dict[str, Any]) -> Example:
        """``context`` and ``continuation`` strings."""
        require(row, fields, "context", str)
        require(row, fields, "continuation", str)
        return Example(fields)

    def shot_answer(self, example: Example) -> str:
        """The continuation."""
        return example.fields["continuation"]

    def scored_texts(self, example: Example) -> list[str]:
        """The continuation (with a prefix space where needed)."""
        return [self.style.continuation(example.fields["continuation"])]


class MultipleChoiceDataset(_LogLikelihoodDataset):
    """``multiple_choice`` rows: a ``query``, its ``choices`` and the index ``gold`` of the right one."""

    context_key = "query"
    options_key = "choices"

    def parse_row(self, row: ICLRow, fields: dict[str, Any]) -> Example:
        """``query`` string, non-empty ``choices`` list and an in-range ``gold``."""
        require(row, fields, "query", str)
        choices = require_strings(row, fields, "choices")
        return Example(fields, gold=require_gold(row, fields, len(choices), "choices"))

    def shot_answer(self, example: Example) -> str:
        """The gold choice."""
        return example.fields["choices"][example.gold]

    def scored_texts(self, example: Example) -> list[str]:
        """Every choice (with a prefix space where needed)."""
        return [self.style.continuation(choice) for choice in example.fields["choices"]]

    def loader_batch_size(self, batch_size: int) -> int:
        """Questions per batch: ``batch_size`` counts rows, one per choice of the first question."""
        choices = len(self.examples[0].fields[self.options_key]) if self.examples else 1
        return max(choices, batch_size) // choices


class SchemaDataset(MultipleChoiceDataset):
    """``schema`` rows: ``context_options``, the shared ``continuation`` and the ``gold`` option.

    Each option is scored by the likelihood of the continuation after it.
    """

    options_key = "context_options"

    def parse_row(self, row: ICLRow, fields: dict[str, Any]) -> Example:
        """Non-empty ``context_options``, a ``continuation`` string and an in-range ``gold``."""
        options = require_strings(row, fields, "context_options")
        require(row, fields, "continuation", str)
        return Example(fields, gold=require_gold(row, fields, len(options), "context_options"))

    def shot_text(self, example: Example, preceded: bool) -> str:
        """Prelimiter, (delimiter), gold option, delimiter, continuation."""
        fields = example.fields
        option = fields["context_options"][example.gold]
        return self.style.schema_shot(option, fields["continuation"], preceded)

    def row_texts(self, index: int) -> tuple[list[str], list[str]]:
        """Every option (see ``PromptStyle.schema_options``); the continuation."""
        fields, preceded = self.examples[index].fields, len(self.preambles[index]) > 0
        return (
            self.style.schema_options(fields["context_options"], preceded),
            [self.style.continuation(fields["continuation"])],
        )


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
}

for _task_type, _dataset_cls in TASK_DATASETS.items():
    registry.icl_datasets.register(_task_type, func=_dataset_cls)
