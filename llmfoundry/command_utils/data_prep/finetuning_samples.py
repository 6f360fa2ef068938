"""The samples ``convert_finetuning_dataset`` writes: rows preprocessed, checked, and tokenized
into turns (LLM Foundry 0.22's ``turns`` column) or kept as text (``prompt``/``response`` or
``messages``); see :mod:`.convert_finetuning_dataset` for the layouts and which examples are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from llmfoundry.data.data import BadRowError, RowStats
from llmfoundry.data.finetuning.formatting import tokenize_example, untokenized_example
from llmfoundry.data.finetuning.hf_source import preprocess_row
from llmfoundry.data.finetuning.tasks import PreprocessingFn
from llmfoundry.data.finetuning.turns import (
    TargetPolicy,
    example_length,
    is_trainable,
    with_final_eos,
)
from llmfoundry.data.token_batches import fast_text_encoder
from llmfoundry.utils.exceptions import DatasetError
from llmfoundry.utils.tokenizer_utils import eos_token_id_of

TURNS_COLUMNS = {"turns": "json"}
PROMPT_RESPONSE_COLUMNS = {"prompt": "str", "response": "str"}
MESSAGES_COLUMNS = {"messages": "json"}
NO_TARGET = "no target within max_seq_len"

LocatedRow = tuple[str, Mapping[str, Any]]  # (where the row is, for messages; the row)
# A row, or the error that made reading it fail (a bad JSON line), where it is.
LocatedRowOrError = tuple[str, Mapping[str, Any] | BadRowError]
RowResult = dict[str, Any] | BadRowError | None


@dataclass(frozen=True)
class FinetuningSamples:
    """Turns rows into finetuning samples (in worker processes, see :func:`convert_chunk`).

    Attributes:
        hf_split: the split's name, for messages.
        preprocess: the preprocessing function, or None to use the rows as they are.
        tokenizer: the tokenizer; None writes the examples as text.
        max_seq_len: tokenized examples with no target within this many tokens are dropped.
        chats: the dataset holds chats (written as ``messages`` when not tokenizing).
        skip_bad_rows: count and skip bad rows instead of failing on the first.
        policy: the targets that decide which tokenized examples are kept.
        encoder_decoder: keep every tokenized example (the encoder input is cut, not dropped).
    """

    hf_split: str
    preprocess: PreprocessingFn | None
    tokenizer: PreTrainedTokenizerBase | None
    max_seq_len: int
    chats: bool
    skip_bad_rows: bool
    policy: TargetPolicy = field(default_factory=TargetPolicy)
    encoder_decoder: bool = False
    # The tokenizer's fast path, built here (before the workers fork) when it has one.
    encode: Callable[[str], list[int]] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tokenizer = self.tokenizer
        object.__setattr__(
            self, "encode", fast_text_encoder(tokenizer) if tokenizer is not None else None
        )

    @property
    def columns(self) -> dict[str, str]:
        """The MDS columns of this dataset's samples."""
        if self.tokenizer is not None:
            return TURNS_COLUMNS
        return MESSAGES_COLUMNS if self.chats else PROMPT_RESPONSE_COLUMNS

    def results_of_rows(self, rows: list[LocatedRowOrError]) -> list[RowResult]:
        """What becomes of each row (run in a worker process): its sample, None when it has no
        target to learn, or the error that makes it a bad row (raised or counted by the caller,
        in row order, see :func:`samples_of_results`)."""
        results: list[RowResult] = []
        for where, row in rows:
            if isinstance(row, BadRowError):
                results.append(row)
                continue
            try:
                results.append(self.sample_of_row(row, where))
            except BadRowError as bad:
                results.append(bad)
        return results

    def sample_of_row(self, row: Mapping[str, Any], where: str) -> dict[str, Any] | None:
        """The MDS sample of a row, or None when it has no target to learn.

        Raises:
            BadRowError: if preprocessing fails, the example is malformed, or it is a chat among
                prompt/response rows or the other way round (when writing text, whose columns
                differ).
        """
        try:
            example = preprocess_row(self.preprocess, row, where)
        except DatasetError as err:
            raise BadRowError("preprocessing failed", str(err)) from err
        try:
            return self.sample_of_example(example, where)
        except DatasetError as err:
            raise BadRowError("invalid example", str(err)) from err

    def sample_of_example(self, example: Mapping[str, Any], where: str) -> dict[str, Any] | None:
        """The MDS sample of a preprocessed example, or None when it has no target to learn.

        Raises:
            DatasetError: if the example is malformed.
            BadRowError: if it is a chat among prompt/response rows, or the other way round
                (when writing text).
        """
        if self.tokenizer is None:
            text = untokenized_example(example, where)
            if ("messages" in text) != self.chats:
                kind = "chat" if self.chats else "prompt/response"
                raise BadRowError(
                    f"not a {kind} example",
                    f"{where}: the first example is a {kind} example, so every row must be; "
                    "convert chats and prompt/response pairs separately",
                )
            return text
        turns = tokenize_example(example, self.tokenizer, where, self.encode)["turns"]
        if not self.encoder_decoder:
            final = with_final_eos(turns, eos_token_id_of(self.tokenizer))
            if not is_trainable(final, self.policy, self.max_seq_len):
                return None
        return {"turns": turns}


def convert_chunk(converter: FinetuningSamples, rows: list[LocatedRowOrError]) -> list[RowResult]:
    """:meth:`FinetuningSamples.results_of_rows`, as an :class:`OrderedPool` function."""
    return converter.results_of_rows(rows)


def samples_of_results(
    results: Iterable[list[RowResult]], stats: RowStats
) -> Iterator[dict[str, Any]]:
    """The samples among the rows' results (in row order), counting drops in ``stats``.

    Raises:
        BadRowError: the first bad row's, unless ``stats`` skips bad rows.
    """
    for chunk in results:
        for result in chunk:
            if isinstance(result, BadRowError):
                stats.bad_row(result)
            elif result is None:
                stats.dropped[NO_TARGET] += 1
            else:
                yield result


class TokenCounts:
    """Counts the tokens of the tokenized samples passing through, and those longer than
    ``max_seq_len``."""

    def __init__(self, max_seq_len: int) -> None:
        self.max_seq_len = max_seq_len
        self.tokens = 0
        self.long_examples = 0

    def count(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Pass ``samples`` through, counting them."""
        for sample in samples:
            if "turns" not in sample:  # text: nothing to count
                yield sample
                continue
            length = example_length(sample["turns"])
            self.tokens += length
            self.long_examples += length > self.max_seq_len
            yield sample
