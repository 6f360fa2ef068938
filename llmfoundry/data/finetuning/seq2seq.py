"""Encoder-decoder batches (``decoder_only_format: false``), as LLM Foundry builds them for T5.

An example's turns become one encoder input and one target:

* the encoder input (``input_ids``, ``attention_mask``) is every turn's prompt, with the
  responses of all turns but the last in between (the conversation so far);
* the target (``labels``) is the last response, ending with EOS (appended when missing);
* ``decoder_input_ids`` is the target shifted right by one, starting with the pad id (T5's
  decoder start token; ``-100`` becomes the pad id), and ``decoder_attention_mask`` is 1 on
  the target's tokens.

Either side longer than the batch width keeps its first ``width - 1`` tokens and ends with EOS
(a cut target still teaches the model to stop). The width is ``max_seq_len``, or with
``pad_to_longest`` the longest encoder input or target of the batch (at most ``max_seq_len``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from llmfoundry.utils.constants import IGNORE_INDEX


def stitch_encoder_decoder(
    turns: Sequence[Mapping[str, Sequence[int]]], eos_token_id: int | None
) -> tuple[list[int], list[int]]:
    """An example's ``(encoder input, target)`` before truncation (see the module docstring)."""
    context: list[int] = []
    last = len(turns) - 1
    for turn in turns[:last]:
        context += [*turn["input_ids"], *turn["labels"]]
    context += list(turns[last]["input_ids"])
    target = list(turns[last]["labels"])
    if eos_token_id is not None and (not target or target[-1] != eos_token_id):
        target.append(eos_token_id)
    return context, target


def cut_with_eos(tokens: list[int], width: int, eos_token_id: int | None) -> list[int]:
    """``tokens`` cut to ``width``, ending with EOS when it was cut (and an EOS id is known)."""
    if len(tokens) <= width:
        return tokens
    if eos_token_id is None:
        return tokens[:width]
    return [*tokens[: width - 1], eos_token_id]


def encoder_decoder_batch(
    pairs: Sequence[tuple[list[int], list[int]]],
    width: int,
    pad_token_id: int,
    eos_token_id: int | None,
) -> dict[str, torch.Tensor]:
    """Pad ``(encoder input, target)`` pairs into a batch of ``width`` columns per side.

    Returns:
        ``input_ids``, ``attention_mask``, ``labels``, ``decoder_input_ids`` and
        ``decoder_attention_mask``, each ``(batch, width)`` int64.
    """
    shape = (len(pairs), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.int64)
    attention_mask = torch.zeros(shape, dtype=torch.int64)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.int64)
    for row, (context, target) in enumerate(pairs):
        context = cut_with_eos(context, width, eos_token_id)
        target = cut_with_eos(target, width, eos_token_id)
        input_ids[row, : len(context)] = torch.as_tensor(context, dtype=torch.int64)
        attention_mask[row, : len(context)] = 1
        labels[row, : len(target)] = torch.as_tensor(target, dtype=torch.int64)
    start = torch.full((len(pairs), 1), pad_token_id, dtype=torch.int64)
    decoder_input_ids = torch.cat([start, labels[:, :-1]], dim=1)
    decoder_input_ids = decoder_input_ids.masked_fill(
        decoder_input_ids == IGNORE_INDEX, pad_token_id
    )
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "decoder_input_ids": decoder_input_ids,
        "decoder_attention_mask": (labels != IGNORE_INDEX).to(torch.int64),
    }
