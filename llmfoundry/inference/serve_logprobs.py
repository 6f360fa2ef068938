"""Log-probabilities for the endpoint's ``/v1/completions`` ``logprobs`` field.

OpenAI's legacy completions format: with ``logprobs: N`` each choice carries, for every
completion token (and, with ``echo``, every prompt token first),

* ``tokens``: the token as text (decoded on its own);
* ``token_logprobs``: its log-probability given everything before it (``null`` for the very
  first prompt token, which nothing predicts);
* ``top_logprobs``: the ``N`` most likely tokens at that position, ``{text: logprob}``;
* ``text_offset``: where the token starts in the choice's text.

The values come from one forward pass over prompt and completion, in float32, so they are
those of the model on that exact sequence of ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The most alternatives a request may ask for per position.
MAX_LOGPROBS = 20


def parse_logprobs(value: Any) -> int | None:
    """A completion request's ``logprobs``: how many alternatives to list (None: none).

    Raises:
        ValueError: for anything but an integer from 0 to ``MAX_LOGPROBS``, null or false.
    """
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LOGPROBS:
        raise ValueError(
            f"'logprobs' must be an integer from 0 to {MAX_LOGPROBS}, got {json.dumps(value)}"
        )
    return value


def kept_completion_tokens(
    tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int], text: str
) -> list[int]:
    """The generated ids that make up ``text``: those before a stop string that cut it."""
    kept: list[int] = []
    for token in token_ids:
        candidate = [*kept, token]
        if len(str(tokenizer.decode(candidate, skip_special_tokens=True))) > len(text):
            break
        kept = candidate
    return kept


@torch.no_grad()
def completion_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[int],
    completion_ids: Sequence[int],
    top_n: int,
    echo: bool,
) -> dict[str, Any]:
    """The ``logprobs`` object of one choice.

    Args:
        model: the served causal LM.
        tokenizer: its tokenizer.
        prompt_ids: the prompt's ids.
        completion_ids: the generated ids the choice's text is made of.
        top_n: how many alternatives to list per position (0 to ``MAX_LOGPROBS``).
        echo: also give the prompt's tokens (the choice's text starts with the prompt).
    """
    ids = [*prompt_ids, *completion_ids]
    input_ids = torch.tensor([ids], device=model.device)
    logits = cast(Any, model)(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    log_probs = torch.log_softmax(logits.logits[0].float(), dim=-1).cpu()
    first = 0 if echo else len(prompt_ids)
    result: dict[str, list[Any]] = {
        "tokens": [],
        "token_logprobs": [],
        "top_logprobs": [],
        "text_offset": [],
    }
    offset = 0 if echo else len(str(tokenizer.decode(list(prompt_ids), skip_special_tokens=True)))
    for position in range(first, len(ids)):
        text = str(tokenizer.decode([ids[position]]))
        result["tokens"].append(text)
        result["text_offset"].append(offset)
        offset += len(text)
        if position == 0:  # nothing comes before the first token
            result["token_logprobs"].append(None)
            result["top_logprobs"].append(None)
            continue
        scores = log_probs[position - 1]
        result["token_logprobs"].append(float(scores[ids[position]]))
        top: dict[str, float] = {}
        if top_n > 0:
            values, indices = scores.topk(min(top_n, scores.numel()))
            for value, index in zip(values.tolist(), indices.tolist(), strict=True):
                # Two ids that decode alike keep the likelier one (listed first).
                top.setdefault(str(tokenizer.decode([index])), float(value))
        result["top_logprobs"].append(top)
    return result
