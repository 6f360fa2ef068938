"""Turn a list of chat messages into the prompt text a model continues.

A tokenizer that carries a chat template (``tokenizer.chat_template``) renders with it; one
without (a base model, our byte-level BPE) falls back to ChatML::

    <|im_start|>system
    You are helpful.<|im_end|>
    <|im_start|>user
    Hi<|im_end|>
    <|im_start|>assistant

Shared by the chat CLI, the OpenAI-compatible endpoint and the web UI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from llmfoundry.utils.exceptions import ConfigError

ROLES = ("system", "user", "assistant")
CHATML_END = "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Validate chat messages: a non-empty list of ``{role, content}`` with known roles.

    Returns:
        The messages as plain ``{"role", "content"}`` dicts.

    Raises:
        ConfigError: naming the first bad message (``messages[i].role`` / ``.content``).
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ConfigError("messages must be a non-empty list of {role, content} objects")
    checked: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ConfigError(f"messages[{index}] must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ConfigError(
                f"messages[{index}].role must be one of {', '.join(ROLES)}, got {role!r}"
            )
        if not isinstance(content, str):
            raise ConfigError(f"messages[{index}].content must be a string")
        checked.append({"role": str(role), "content": content})
    return checked


def uses_chatml(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``render_chat`` falls back to ChatML for this tokenizer (it has no template)."""
    return not getattr(tokenizer, "chat_template", None)


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for ``messages``: the tokenizer's chat template, else ChatML.

    Args:
        tokenizer: the model's tokenizer.
        messages: ``{role, content}`` mappings (validated with :func:`check_messages`).
        add_generation_prompt: end with the opening of an assistant turn.

    Raises:
        ConfigError: on invalid messages.
    """
    checked = check_messages(messages)
    template = None if not uses_chatml(tokenizer) else CHATML_TEMPLATE
    text = tokenizer.apply_chat_template(
        checked,
        chat_template=template,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    assert isinstance(text, str)
    return text


def stop_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Strings that end an assistant turn: ChatML's end marker where ChatML is used."""
    return [CHATML_END] if uses_chatml(tokenizer) else []
