"""Turn tokenized finetuning examples (turns) into model batches, with label masking.

Decoder-only examples become one sequence: every turn's prompt then response, in order. Labels
are the token ids where the loss is taken and ``-100`` elsewhere:

* ``target_responses``: ``last`` makes only the final response a target, ``all`` every response.
* ``target_prompts``: ``none`` makes no prompt a target, ``all`` every prompt, ``length>=N`` the
  prompts of at least ``N`` tokens.

The first token of an example is never a target: nothing precedes it, so an unpadded model
never scores it anyway, and masking it keeps a packed row (examples back to back) from scoring
an example's first token as a prediction from the previous example's last token.

A sequence longer than ``max_seq_len`` keeps its first ``max_seq_len`` tokens (it loses the end
of its last response). :func:`is_trainable` tells the dataset builder which examples to drop:
those whose tokens before the final response already fill ``max_seq_len`` and those left with
no target token.

Examples read from MDS are not filtered when the loader is built (a streaming dataset is read
shard by shard, and dropping samples would change how many batches each rank gets), so the
collator built for them counts, with :class:`TruncationStats`, the examples it truncates and
those left without a target; see :class:`Seq2SeqFinetuningCollator` for what happens to them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llmfoundry.utils.exceptions import ConfigError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
TARGET_RESPONSES = ("last", "all")
_LENGTH_RULE = re.compile(r"^length>=(\d+)$")


@dataclass(frozen=True)
class TargetPolicy:
    """Which parts of an example are loss targets.

    Attributes:
        min_prompt_len: prompts of at least this many tokens are targets; None: no prompt
            (``target_prompts: none``); 0: every prompt (``all``).
        all_responses: every response is a target (``target_responses: all``), else only the last.
    """

    min_prompt_len: int | None = None
    all_responses: bool = False

    @classmethod
    def from_config(
        cls, target_prompts: str, target_responses: str, section: str = "dataset"
    ) -> TargetPolicy:
        """Parse the ``target_prompts``/``target_responses`` config values.

        Raises:
            ConfigError: naming the key and the accepted values.
        """
        prompts = str(target_prompts).strip().lower()
        if prompts == "none":
            min_prompt_len = None
        elif prompts == "all":
            min_prompt_len = 0
        elif match := _LENGTH_RULE.match(prompts.replace(" ", "")):
            min_prompt_len = int(match.group(1))
        else:
            raise ConfigError(
                f"{section}.target_prompts is '{target_prompts}'; use none, all or length>=N "
                "(N a whole number of tokens)"
            )
        responses = str(target_responses).strip().lower()
        if responses not in TARGET_RESPONSES:
            raise ConfigError(
                f"{section}.target_responses is '{target_responses}'; use last or all"
            )
        return cls(min_prompt_len=min_prompt_len, all_responses=responses == "all")

    def prompt_is_target(self, prompt_len: int) -> bool:
        """Whether a prompt of ``prompt_len`` tokens is a target."""
        return self.min_prompt_len is not None and prompt_len >= self.min_prompt_len


def build_sequence(
    turns: Sequence[Mapping[str, Sequence[int]]], policy: TargetPolicy, max_seq_len: int
) -> tuple[list[int], list[int]]:
    """Concatenate an example's turns into ``(input_ids, labels)``, cut to ``max_seq_len``."""
    input_ids: list[int] = []
    labels: list[int] = []
    last = len(turns) - 1
    for i, turn in enumerate(turns):
        prompt = list(turn["input_ids"])
        response = list(turn["labels"])
        input_ids += prompt + response
        labels += prompt if policy.prompt_is_target(len(prompt)) else [IGNORE_INDEX] * len(prompt)
        labels += (
            response if (policy.all_responses or i == last) else [IGNORE_INDEX] * len(response)
        )
    if labels:
        labels[0] = IGNORE_INDEX
    return input_ids[:max_seq_len], labels[:max_seq_len]


def example_length(turns: Sequence[Mapping[str, Sequence[int]]]) -> int:
    """Tokens in an example before truncation."""
    return sum(len(t["input_ids"]) + len(t["labels"]) for t in turns)


def is_trainable(
    turns: Sequence[Mapping[str, Sequence[int]]], policy: TargetPolicy, max_seq_len: int
) -> bool:
    """Whether an example keeps a target within ``max_seq_len`` (else the builder drops it).

    False when the tokens before the final response fill ``max_seq_len`` (its response would
    be cut entirely) or when no target token survives truncation.
    """
    before_final_response = example_length(turns) - len(turns[-1]["labels"])
    if before_final_response >= max_seq_len:
        return False
    _, labels = build_sequence(turns, policy, max_seq_len)
    return any(label != IGNORE_INDEX for label in labels)


class TruncationStats:
    """Counts of collated examples that were truncated or left without a target token.

    Logged sparingly: a warning the first time an example is truncated or untrainable, then a
    summary after collated batch 2, 4, 8, 16, ... whenever the counts grew since the last
    summary (so at most about log2(batches) messages). Each data loader worker process keeps
    (and logs) its own counts.

    Attributes:
        batches: batches collated.
        examples: examples collated.
        truncated: examples longer than ``max_seq_len`` (cut to it).
        untrainable: examples with no target token within ``max_seq_len``.
    """

    def __init__(self, max_seq_len: int, source: str = "MDS") -> None:
        self.max_seq_len = max_seq_len
        self.source = source
        self.batches = 0
        self.examples = 0
        self.truncated = 0
        self.untrainable = 0
        self._logged: tuple[int, int] = (0, 0)

    def record(self, length: int, trainable: bool) -> None:
        """Count one example of ``length`` tokens (before truncation)."""
        self.examples += 1
        if length > self.max_seq_len:
            self.truncated += 1
        if not trainable:
            self.untrainable += 1

    def end_batch(self) -> None:
        """Count a collated batch and log the counts if it is time to."""
        self.batches += 1
        counts = (self.truncated, self.untrainable)
        if counts == self._logged:
            return
        first = self._logged == (0, 0)
        if not first and self.batches & (self.batches - 1):  # not a power of two
            return
        self._logged = counts
        logger.log(
            logging.WARNING if first else logging.INFO,
            "%s finetuning examples: %d of %d collated so far (%d batches) were longer than "
            "max_seq_len=%d and truncated; %d had no target token left within max_seq_len "
            "(they add nothing to the loss; convert with a larger max_seq_len or filter them)",
            self.source,
            self.truncated,
            self.examples,
            self.batches,
            self.max_seq_len,
            self.untrainable,
        )


class Seq2SeqFinetuningCollator:
    """Batch tokenized finetuning examples (``{'turns': [...]}``) for training.

    Decoder-only (the default): ``input_ids``, ``attention_mask`` and ``labels`` of shape
    ``(batch, max_seq_len)``, right-padded, or ``(batch, longest)`` with
    ``allow_pad_trimming``. Encoder-decoder (``decoder_only_format=False``, single-turn
    examples): ``input_ids``/``attention_mask`` hold the prompt, ``labels``/
    ``decoder_attention_mask`` the response, each cut to ``max_seq_len``.

    Args:
        pad_token_id: the id put in padded positions.
        max_seq_len: the longest sequence, in tokens.
        target_prompts: ``none``, ``all`` or ``length>=N``.
        target_responses: ``last`` or ``all``.
        decoder_only_format: one sequence per example; False for encoder-decoder batches.
        allow_pad_trimming: trim the batch to its longest example instead of ``max_seq_len``.
        track_truncation: count (and log, see :class:`TruncationStats`) truncated examples and
            examples with no target token left. The loader sets it for MDS sources, whose
            examples were not checked when it was built. Such an untrainable example stays in
            its batch as a row whose labels are all -100 (adding nothing to the loss, as if it
            were dropped), so the batch keeps its size; the packing collator leaves it out.

    Attributes:
        stats: the counts, when ``track_truncation`` (else None).

    Raises:
        ConfigError: on a bad target setting or ``max_seq_len``.
    """

    def __init__(
        self,
        pad_token_id: int,
        max_seq_len: int,
        target_prompts: str = "none",
        target_responses: str = "last",
        decoder_only_format: bool = True,
        allow_pad_trimming: bool = False,
        track_truncation: bool = False,
    ) -> None:
        if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool) or max_seq_len <= 0:
            raise ConfigError(f"max_seq_len must be a positive integer, got {max_seq_len!r}")
        self.pad_token_id = pad_token_id
        self.max_seq_len = max_seq_len
        self.policy = TargetPolicy.from_config(target_prompts, target_responses)
        self.decoder_only_format = decoder_only_format
        self.allow_pad_trimming = allow_pad_trimming
        self.stats = TruncationStats(max_seq_len) if track_truncation else None

    def sequence(self, example: Mapping[str, Any]) -> tuple[list[int], list[int]]:
        """The example's ``(input_ids, labels)`` after masking and truncation."""
        return build_sequence(example["turns"], self.policy, self.max_seq_len)

    def batch_sequences(
        self, examples: Sequence[Mapping[str, Any]]
    ) -> list[tuple[list[int], list[int], bool]]:
        """One batch's ``(input_ids, labels, trainable)`` per example, counted in ``stats``.

        ``trainable`` is :func:`is_trainable`'s answer (False: the tokens before the final
        response fill ``max_seq_len`` or no target token is left).
        """
        sequences = []
        for example in examples:
            turns = example["turns"]
            input_ids, labels = build_sequence(turns, self.policy, self.max_seq_len)
            length = example_length(turns)
            trainable = length - len(turns[-1]["labels"]) < self.max_seq_len and any(
                label != IGNORE_INDEX for label in labels
            )
            if self.stats is not None:
                self.stats.record(length, trainable)
            sequences.append((input_ids, labels, trainable))
        if self.stats is not None:
            self.stats.end_batch()
        return sequences

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ``examples`` into a batch (see the class docstring for its keys)."""
        if not self.decoder_only_format:
            return self._encoder_decoder_batch(examples)
        # An untrainable example (only possible from MDS) keeps its row, fully masked, as if
        # it had been dropped: it must not train on prompts whose response was cut away.
        sequences = [
            (ids, labels if trainable else [IGNORE_INDEX] * len(labels))
            for ids, labels, trainable in self.batch_sequences(examples)
        ]
        width = self.max_seq_len
        if self.allow_pad_trimming:
            width = max((len(ids) for ids, _ in sequences), default=1)
        return pad_sequences(sequences, width, self.pad_token_id)

    def _encoder_decoder_batch(
        self, examples: Sequence[Mapping[str, Any]]
    ) -> dict[str, torch.Tensor]:
        prompts: list[tuple[list[int], list[int]]] = []
        responses: list[tuple[list[int], list[int]]] = []
        for example in examples:
            turns = example["turns"]
            if len(turns) != 1:
                raise ConfigError(
                    "dataset.decoder_only_format: false takes single-turn prompt/response "
                    f"examples, but an example has {len(turns)} turns; use decoder_only_format: true"
                )
            prompt = list(turns[0]["input_ids"])
            response = list(turns[0]["labels"])
            if self.stats is not None:
                # The response is never empty, so it always keeps a target.
                self.stats.record(max(len(prompt), len(response)), trainable=True)
            prompt = prompt[: self.max_seq_len]
            response = response[: self.max_seq_len]
            prompts.append((prompt, prompt))
            responses.append((response, response))
        if self.stats is not None:
            self.stats.end_batch()
        width = self.max_seq_len
        prompt_width = response_width = width
        if self.allow_pad_trimming:
            prompt_width = max((len(p) for p, _ in prompts), default=1)
            response_width = max((len(r) for r, _ in responses), default=1)
        encoder = pad_sequences(prompts, prompt_width, self.pad_token_id)
        decoder = pad_sequences(responses, response_width, self.pad_token_id)
        return {
            "input_ids": encoder["input_ids"],
            "attention_mask": encoder["attention_mask"],
            "labels": decoder["labels"],
            "decoder_attention_mask": decoder["attention_mask"],
        }


def pad_sequences(
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]], width: int, pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad ``(input_ids, labels)`` pairs to ``width`` (labels padded with -100)."""
    batch = len(sequences)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.int64)
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.int64)
    attention_mask = torch.zeros((batch, width), dtype=torch.int64)
    for row, (ids, row_labels) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.int64)
        labels[row, : len(row_labels)] = torch.as_tensor(row_labels, dtype=torch.int64)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def count_tokens_in_batch(batch: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Token counts of a finetuning batch, for Composer's token-based durations.

    Returns:
        ``total``: non-padding tokens (encoder plus decoder tokens for encoder-decoder
        batches); ``loss_generating``: tokens whose label is scored.
    """
    total = int(batch["attention_mask"].sum().item())
    labels = batch["labels"]
    if "decoder_attention_mask" in batch:
        total += int(batch["decoder_attention_mask"].sum().item())
        scored = int((labels != IGNORE_INDEX).sum().item())
    else:
        scored = int((labels[:, 1:] != IGNORE_INDEX).sum().item())
    return {"total": total, "loss_generating": scored}
