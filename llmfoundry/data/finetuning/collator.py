"""Turn tokenized finetuning examples (turns) into model batches, with label masking.

Decoder-only examples become one sequence: every turn's prompt then response, in order. The
final response ends with EOS: when it does not already (LLM Foundry's converter writes responses
without it), the collator appends it. Labels are the token ids where the loss is taken and
``-100`` elsewhere:

* ``target_responses``: ``last`` makes only the final response a target, ``all`` every response.
* ``target_prompts``: ``none`` makes no prompt a target, ``all`` every prompt, ``length>=N`` the
  prompts of at least ``N`` tokens.

The first token of an example is never a target: nothing precedes it, so an unpadded model
never scores it anyway, and masking it keeps a packed row (examples back to back) from scoring
an example's first token as a prediction from the previous example's last token.

A sequence longer than ``max_seq_len`` keeps its first ``max_seq_len`` tokens (it loses the end
of its last response). :func:`is_trainable` tells the dataset builder which examples to drop:
those left with no target token within ``max_seq_len`` (with the default targets, those whose
tokens before the final response fill ``max_seq_len``).

A batch is ``max_seq_len`` wide; ``pad_to_longest`` makes it as wide as its longest example
instead, and ``allow_pad_trimming`` trims every batch after the first (which keeps the full
width, so that running out of memory shows at once) to its longest example rounded up to a
multiple of 8. Encoder-decoder batches (``decoder_only_format: false``) are built by
:mod:`.seq2seq`.

Examples read from MDS are not filtered when the loader is built (a streaming dataset is read
shard by shard, and dropping samples would change how many batches each rank gets), so the
collator built for them counts, with :class:`TruncationStats`, the examples it truncates and
those left without a target; see :class:`Seq2SeqFinetuningCollator` for what happens to them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from llmfoundry.data.finetuning.seq2seq import encoder_decoder_batch, stitch_encoder_decoder
from llmfoundry.data.finetuning.turns import (
    IGNORE_INDEX,
    TRIM_MULTIPLE,
    TargetPolicy,
    build_sequence,
    example_length,
    with_final_eos,
)
from llmfoundry.data.text_collator import count_tokens_in_batch as count_tokens_in_batch
from llmfoundry.utils.config_checks import PositiveInt, check_value

logger = logging.getLogger(__name__)


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
    ``(batch, width)``, right-padded. Encoder-decoder (``decoder_only_format=False``):
    ``input_ids``/``attention_mask`` hold the encoder input, ``labels``,
    ``decoder_input_ids`` and ``decoder_attention_mask`` the target (see :mod:`.seq2seq`).
    The width is ``max_seq_len``, or see ``pad_to_longest`` and ``allow_pad_trimming``.

    Args:
        pad_token_id: the id put in padded positions (and T5's decoder start token).
        max_seq_len: the longest sequence, in tokens (each side, for encoder-decoder).
        target_prompts: ``none``, ``all`` or ``length>=N``.
        target_responses: ``last`` or ``all``.
        decoder_only_format: one sequence per example; False for encoder-decoder batches.
        allow_pad_trimming: trim each batch after the first to its longest example rounded up
            to a multiple of 8 (the first keeps its full width).
        track_truncation: count (and log, see :class:`TruncationStats`) truncated examples and
            examples with no target token left. The loader sets it for MDS sources, whose
            examples were not checked when it was built. Such an untrainable example stays in
            its batch as a row whose labels are all -100 (adding nothing to the loss, as if it
            were dropped), so the batch keeps its size; the packing collator leaves it out.
        eos_token_id: appended to an example's final response when it does not end with it;
            None appends nothing.
        pad_to_longest: pad each batch to its longest example (at most ``max_seq_len``)
            instead of ``max_seq_len``.

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
        eos_token_id: int | None = None,
        pad_to_longest: bool = False,
    ) -> None:
        check_value(max_seq_len, PositiveInt, "max_seq_len")
        self.pad_token_id = pad_token_id
        self.max_seq_len = max_seq_len
        self.policy = TargetPolicy.from_config(target_prompts, target_responses)
        self.decoder_only_format = decoder_only_format
        self.allow_pad_trimming = allow_pad_trimming
        self.eos_token_id = eos_token_id
        self.pad_to_longest = pad_to_longest
        self.stats = TruncationStats(max_seq_len) if track_truncation else None
        self._seen_first_batch = False

    def sequence(self, example: Mapping[str, Any]) -> tuple[list[int], list[int]]:
        """The example's ``(input_ids, labels)`` after masking and truncation."""
        turns = with_final_eos(example["turns"], self.eos_token_id)
        return build_sequence(turns, self.policy, self.max_seq_len)

    def batch_sequences(
        self, examples: Sequence[Mapping[str, Any]]
    ) -> list[tuple[list[int], list[int], bool]]:
        """One batch's ``(input_ids, labels, trainable)`` per example, counted in ``stats``.

        ``trainable`` is False when no target token is left within ``max_seq_len``.
        """
        sequences = []
        for example in examples:
            turns = with_final_eos(example["turns"], self.eos_token_id)
            input_ids, labels = build_sequence(turns, self.policy, self.max_seq_len)
            trainable = any(label != IGNORE_INDEX for label in labels)
            if self.stats is not None:
                self.stats.record(example_length(turns), trainable)
            sequences.append((input_ids, labels, trainable))
        if self.stats is not None:
            self.stats.end_batch()
        return sequences

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ``examples`` into a batch (see the class docstring for its keys)."""
        if not self.decoder_only_format:
            return self._trim(self._encoder_decoder_batch(examples))
        # An untrainable example (only possible from MDS) keeps its row, fully masked, as if
        # it had been dropped.
        sequences = [
            (ids, labels if trainable else [IGNORE_INDEX] * len(labels))
            for ids, labels, trainable in self.batch_sequences(examples)
        ]
        width = self.max_seq_len
        if self.pad_to_longest:
            width = max((len(ids) for ids, _ in sequences), default=1)
        return self._trim(pad_sequences(sequences, width, self.pad_token_id))

    def _encoder_decoder_batch(
        self, examples: Sequence[Mapping[str, Any]]
    ) -> dict[str, torch.Tensor]:
        pairs = [stitch_encoder_decoder(e["turns"], self.eos_token_id) for e in examples]
        if self.stats is not None:
            for context, target in pairs:
                # The target is never empty, so it always keeps a token to learn.
                self.stats.record(max(len(context), len(target)), trainable=True)
            self.stats.end_batch()
        width = self.max_seq_len
        if self.pad_to_longest:
            longest = max((max(len(c), len(t)) for c, t in pairs), default=1)
            width = min(longest, self.max_seq_len)
        return encoder_decoder_batch(pairs, width, self.pad_token_id, self.eos_token_id)

    def _trim(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``allow_pad_trimming``: every batch after the first, cut to its longest row."""
        if not (self.allow_pad_trimming and self._seen_first_batch):
            self._seen_first_batch = True
            return batch
        if self.decoder_only_format:
            groups = {"attention_mask": ("input_ids", "attention_mask", "labels")}
        else:
            groups = {
                "attention_mask": ("input_ids", "attention_mask"),
                "decoder_attention_mask": ("labels", "decoder_input_ids", "decoder_attention_mask"),
            }
        trimmed = dict(batch)
        for mask_key, keys in groups.items():
            longest = int(batch[mask_key].sum(dim=1).max().item())
            keep = -(-longest // TRIM_MULTIPLE) * TRIM_MULTIPLE
            for key in keys:
                trimmed[key] = batch[key][:, :keep].contiguous()
        return trimmed


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
