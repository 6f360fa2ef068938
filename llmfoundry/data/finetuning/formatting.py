"""Tokenize one finetuning example into *turns*: ``{'turns': [{'input_ids', 'labels'}, ...]}``.

A turn is a prompt (``input_ids``) followed by the response the model learns to write
(``labels``, token ids, not yet masked). A prompt/response example is one turn; a chat
(``messages``) has one turn per assistant message. Concatenating every turn's ``input_ids`` and
``labels`` in order gives back the whole tokenized example.

Prompt/response examples are tokenized as LLM Foundry 0.22 tokenizes them (so that the
converter writes the same tokens): prompt and response each with the tokenizer's special tokens,
less the response's leading BOS when both start with one. The final response's EOS is added
later, by the collator, when the tokenizer did not add it (see
:func:`~llmfoundry.data.finetuning.collator.with_final_eos`).

Chats: the tokenizer's chat template is applied to growing prefixes of the conversation. Turn
``i``'s prompt is the templated text from the end of the previous assistant message through the
generation prompt before assistant message ``i``; its response is that message as the template
renders it (content plus whatever end-of-turn marker the template adds). The pieces must
concatenate to the template of the whole conversation, or the example is rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from llmfoundry.utils.exceptions import DatasetError

PROMPT_KEYS = ("prompt",)
RESPONSE_KEYS = ("response", "completion")
MESSAGES_KEYS = ("messages", "conversation")
CHAT_ROLES = ("system", "user", "assistant", "tool")

Turn = dict[str, list[int]]


def tokenize_example(
    example: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    where: str,
    encode: Callable[[str], list[int]] | None = None,
) -> dict[str, list[Turn]]:
    """Tokenize a prompt/response or chat example into turns.

    Args:
        example: ``{'prompt', 'response'}`` (``completion`` also accepted) or ``{'messages'}``
            (``conversation`` also accepted).
        tokenizer: the run's tokenizer (with a chat template for chats).
        where: the example's source and row, for messages (``file.jsonl, row 3``).
        encode: gives ``tokenizer(text)['input_ids']`` faster (see
            :func:`~llmfoundry.data.token_batches.fast_text_encoder`); for prompt/response
            examples.

    Returns:
        ``{'turns': [{'input_ids': [...], 'labels': [...]}, ...]}``.

    Raises:
        DatasetError: on a missing or non-string field, an empty response, a malformed chat or a
            chat template whose pieces do not add up to the whole conversation.
    """
    messages_key = next((k for k in MESSAGES_KEYS if k in example), None)
    if messages_key is not None:
        return {"turns": tokenize_chat(example[messages_key], tokenizer, where)}
    prompt = _text_field(example, PROMPT_KEYS, where, allow_empty=True)
    response = _text_field(example, RESPONSE_KEYS, where, allow_empty=False)
    if encode is not None:
        prompt_ids, response_ids = encode(prompt), encode(response)
    else:
        prompt_ids = list(tokenizer(prompt)["input_ids"])
        response_ids = list(tokenizer(text_target=response)["input_ids"])
    bos_id = tokenizer.bos_token_id
    if bos_id is not None and prompt_ids[:1] == [bos_id] and response_ids[:1] == [bos_id]:
        response_ids = response_ids[1:]
    return {"turns": [{"input_ids": prompt_ids, "labels": response_ids}]}


def untokenized_example(example: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A checked example as text: ``{'prompt', 'response'}`` or ``{'messages'}``.

    What ``convert_finetuning_dataset`` writes without a tokenizer; the same fields and checks
    as :func:`tokenize_example` (``completion`` and ``conversation`` are accepted and renamed).

    Raises:
        DatasetError: on a missing or non-string field, an empty response or a malformed chat.
    """
    messages_key = next((k for k in MESSAGES_KEYS if k in example), None)
    if messages_key is not None:
        messages = example[messages_key]
        _check_messages(messages, where)
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    return {
        "prompt": _text_field(example, PROMPT_KEYS, where, allow_empty=True),
        "response": _text_field(example, RESPONSE_KEYS, where, allow_empty=False),
    }


def _text_field(
    example: Mapping[str, Any], keys: Sequence[str], where: str, *, allow_empty: bool
) -> str:
    key = next((k for k in keys if k in example), None)
    if key is None:
        raise DatasetError(
            f"{where}: no '{keys[0]}' field (fields: {', '.join(map(str, example)) or 'none'}); "
            f"rows need 'prompt' and 'response' strings or a 'messages' list, or set "
            "dataset.preprocessing_fn to a function that builds them"
        )
    value = example[key]
    if not isinstance(value, str):
        raise DatasetError(
            f"{where}: field '{key}' must be a string, got {type(value).__name__}; "
            "fix the row or convert it with dataset.preprocessing_fn"
        )
    if not allow_empty and not value:
        raise DatasetError(
            f"{where}: field '{key}' is empty; every example needs a non-empty response "
            "(remove the row or fill it in)"
        )
    return value


def tokenize_chat(messages: Any, tokenizer: PreTrainedTokenizerBase, where: str) -> list[Turn]:
    """Split a chat into turns with the tokenizer's chat template (see the module docstring).

    Raises:
        DatasetError: on a malformed chat or a template that is not prefix-stable.
    """
    _check_messages(messages, where)
    if tokenizer.chat_template is None:
        raise DatasetError(
            f"{where}: the example is a chat ('messages') but the tokenizer has no chat "
            "template; use a tokenizer with one or set tokenizer.kwargs.chat_template"
        )
    full = _render(tokenizer, messages, add_generation_prompt=False)
    assistant_positions = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    turns: list[Turn] = []
    consumed = ""  # templated text already assigned to earlier turns
    for position in assistant_positions:
        prompt_end = _render(tokenizer, messages[:position], add_generation_prompt=True)
        is_last = position == len(messages) - 1
        response_end = full if is_last else _render(tokenizer, messages[: position + 1], False)
        if not (
            prompt_end.startswith(consumed)
            and response_end.startswith(prompt_end)
            and full.startswith(response_end)
        ):
            raise DatasetError(
                f"{where}: the chat template does not render message {position} as a prefix "
                "of the whole conversation, so the chat cannot be split into prompt/response "
                "turns; use a template whose output only grows as messages are added"
            )
        prompt_text = prompt_end[len(consumed) :]
        response_text = response_end[len(prompt_end) :]
        turns.append(
            {
                "input_ids": _encode(tokenizer, prompt_text),
                "labels": _encode(tokenizer, response_text),
            }
        )
        consumed = response_end
    if consumed != full:  # unreachable while the last message is the assistant's
        raise DatasetError(f"{where}: the chat does not end with an assistant message")
    return turns


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DatasetError(
            f"{where}: field 'messages' must be a non-empty list of {{role, content}} dicts"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise DatasetError(f"{where}: messages[{i}] must be a dict with 'role' and 'content'")
        if message["role"] not in CHAT_ROLES:
            raise DatasetError(
                f"{where}: messages[{i}].role '{message['role']}' is not one of "
                f"{', '.join(CHAT_ROLES)}"
            )
        if not isinstance(message["content"], str):
            raise DatasetError(
                f"{where}: messages[{i}].content must be a string, got "
                f"{type(message['content']).__name__}"
            )
    if messages[-1]["role"] != "assistant":
        raise DatasetError(
            f"{where}: the last message must be the assistant's (it is "
            f"'{messages[-1]['role']}'); drop trailing messages the model is not trained on"
        )
    if not messages[-1]["content"]:
        raise DatasetError(
            f"{where}: messages[{len(messages) - 1}].content is empty; the final assistant "
            "message is the response and must not be empty"
        )


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: list[Any], add_generation_prompt: bool
) -> str:
    if not messages:
        return ""
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert isinstance(text, str)
    return text


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # The template writes any BOS/EOS itself, so the tokenizer must not add them again.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
