"""Causal-LM batches of token samples (the ``text`` loader's collate function) and token counts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from llmfoundry.utils.constants import IGNORE_INDEX
from llmfoundry.utils.exceptions import ConfigError

# The dataset keys that let ``eos_token_id`` / ``bos_token_id`` differ from the tokenizer's
# (LLM Foundry's; the built-in replication validator checks the ids against the tokenizer).
TOKEN_ID_OVERRIDES = {
    "eos_token_id": "override_eos_token_id_mismatch_error",
    "bos_token_id": "override_bos_token_id_mismatch_error",
}


class CausalLMCollator:
    """Pad token-id samples on the right into a causal-LM batch.

    Labels equal ``input_ids`` with ``-100`` at the padding; they are not shifted (the model
    scores ``labels[t]`` against its prediction at ``t - 1``).

    With ``eos_token_id`` (or ``bos_token_id``) the batch also gets ``sequence_id``: the index,
    within its row, of the document each token belongs to in a sample of concatenated documents,
    for models that keep attention within a document (``attn_uses_sequence_id``). An EOS token
    ends its document; a BOS token starts a new one.

    Args:
        pad_token_id: the id put in padded positions.
        eos_token_id: the id that separates concatenated documents, ending each one.
        bos_token_id: the id that separates concatenated documents, starting each one.

    Raises:
        ConfigError: if both ``eos_token_id`` and ``bos_token_id`` are given.
    """

    def __init__(
        self, pad_token_id: int, eos_token_id: int | None = None, bos_token_id: int | None = None
    ) -> None:
        if eos_token_id is not None and bos_token_id is not None:
            raise ConfigError(
                "set only one of dataset.eos_token_id and dataset.bos_token_id: it marks the "
                "boundary between concatenated documents (for sequence_id)"
            )
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id

    def __call__(self, samples: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch ``samples`` (1-D tensors of token ids) padded to the longest one.

        Returns:
            ``input_ids``, ``attention_mask`` (1 on real tokens) and ``labels``, each
            ``(batch, longest)`` int64, and ``sequence_id`` when a separator id is set.
        """
        longest = max(len(sample) for sample in samples)
        input_ids = torch.full((len(samples), longest), self.pad_token_id, dtype=torch.int64)
        attention_mask = torch.zeros((len(samples), longest), dtype=torch.int64)
        for row, sample in enumerate(samples):
            input_ids[row, : len(sample)] = torch.as_tensor(sample, dtype=torch.int64)
            attention_mask[row, : len(sample)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if self.eos_token_id is not None or self.bos_token_id is not None:
            batch["sequence_id"] = document_ids(input_ids, self.eos_token_id, self.bos_token_id)
        return batch


def document_ids(
    input_ids: torch.Tensor, eos_token_id: int | None, bos_token_id: int | None
) -> torch.Tensor:
    """The ``sequence_id`` of concatenated documents: per row, the index of each token's document.

    A BOS token starts a new document; otherwise an EOS token ends its own (it belongs to the
    document it ends, so the count moves on one position later).
    """
    if bos_token_id is not None:
        return torch.cumsum(input_ids == bos_token_id, dim=1)
    ends = torch.cumsum(input_ids == eos_token_id, dim=1)
    return torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], 1)


class ConcatenatedSequenceCollatorWrapper:
    """Add ``sequence_id`` (see :func:`document_ids`) to the batches of another collate function.

    LLM Foundry's wrapper for loaders of concatenated documents; set exactly one of
    ``eos_token_id`` and ``bos_token_id``.

    Raises:
        ConfigError: unless exactly one separator id is given.
    """

    def __init__(
        self,
        base_collator: Callable[[Any], dict[str, torch.Tensor]],
        eos_token_id: int | None = None,
        bos_token_id: int | None = None,
    ) -> None:
        if (eos_token_id is None) == (bos_token_id is None):
            raise ConfigError(
                "ConcatenatedSequenceCollatorWrapper needs exactly one of eos_token_id and "
                "bos_token_id: it marks the boundary between concatenated documents"
            )
        self.base_collator = base_collator
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id

    def __call__(self, examples: Any) -> dict[str, torch.Tensor]:
        """The base collator's batch with ``sequence_id`` computed from its ``input_ids``."""
        batch = self.base_collator(examples)
        batch["sequence_id"] = document_ids(
            batch["input_ids"], self.eos_token_id, self.bos_token_id
        )
        return batch


def count_tokens_in_batch(batch: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Token counts of a batch (text or finetuning), for Composer's token-based durations.

    Returns:
        ``total``: non-padding tokens (encoder plus decoder tokens for encoder-decoder batches,
        which have a ``decoder_attention_mask``); ``loss_generating``: tokens whose label is
        scored. A causal-LM row's first position has no prediction before it, so it is not
        counted; encoder-decoder labels are the decoder's targets, all counted.
    """
    total = int(batch["attention_mask"].sum().item())
    labels = batch["labels"]
    if "decoder_attention_mask" in batch:
        total += int(batch["decoder_attention_mask"].sum().item())
        scored = int((labels != IGNORE_INDEX).sum().item())
    else:
        scored = int((labels[:, 1:] != IGNORE_INDEX).sum().item())
    return {"total": total, "loss_generating": scored}
