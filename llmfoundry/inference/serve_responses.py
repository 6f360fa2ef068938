"""The endpoint's answers: OpenAI-shaped completion and chat bodies, whole or as stream chunks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmfoundry.inference.serve_batching import RowResult


@dataclass
class StreamShape:
    """How one API writes its stream.

    Attributes:
        chunk: builds a chunk from ``(index, text, finish_reason)``.
        opening: chunks sent before any text (the chat role, echoed prompts).
        usage_chunk: builds the final usage chunk (sent when the request asks for it).
    """

    chunk: Callable[[int, str | None, str | None], dict[str, Any]]
    opening: list[dict[str, Any]]
    usage_chunk: Callable[[dict[str, int]], dict[str, Any]]


class _Response:
    """The fields every body of one answer shares: its id, creation time and model."""

    def __init__(self, id_prefix: str, model: str) -> None:
        self.ident = f"{id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def body(self, obj: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """A body of type ``obj`` holding ``choices`` (and ``extra`` fields, such as usage)."""
        return {
            "id": self.ident,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }


class CompletionResponse(_Response):
    """The answer to one ``/v1/completions`` request.

    Args:
        model: the served model's name.
        prompts: the request's prompts.
        echo: whether each choice's text starts with its prompt.
    """

    def __init__(self, model: str, prompts: list[str], echo: bool) -> None:
        super().__init__("cmpl", model)
        self.prompts = prompts
        self.echo = echo

    def chunk(self, index: int, text: str | None, finish: str | None) -> dict[str, Any]:
        """A stream chunk: new ``text`` of choice ``index``, or its ``finish`` reason."""
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        return self.body("text_completion", [choice])

    def stream_shape(self) -> StreamShape:
        """How the streamed answer is written (echoed prompts open it)."""
        opening = [self.chunk(i, p, None) for i, p in enumerate(self.prompts)] if self.echo else []
        return StreamShape(
            self.chunk, opening, lambda usage: self.body("text_completion", [], usage=usage)
        )

    def whole(self, results: list[RowResult], usage: dict[str, int]) -> dict[str, Any]:
        """The non-streamed answer: one choice per prompt, in prompt order."""
        choices = [
            {
                "index": index,
                "text": (self.prompts[index] if self.echo else "") + result.text,
                "logprobs": result.logprobs,
                "finish_reason": result.finish_reason,
            }
            for index, result in enumerate(results)
        ]
        return self.body("text_completion", choices, usage=usage)


class ChatResponse(_Response):
    """The answer to one ``/v1/chat/completions`` request.

    Args:
        model: the served model's name.
    """

    def __init__(self, model: str) -> None:
        super().__init__("chatcmpl", model)

    def chunk(self, index: int, text: str | None, finish: str | None) -> dict[str, Any]:
        """A stream chunk: new ``text`` of choice ``index``, or its ``finish`` reason."""
        delta = {} if text is None else {"content": text}
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self.body("chat.completion.chunk", [choice])

    def stream_shape(self) -> StreamShape:
        """How the streamed answer is written (a chunk naming the assistant role opens it)."""
        role = self.chunk(0, "", None)
        role["choices"][0]["delta"]["role"] = "assistant"
        return StreamShape(
            self.chunk, [role], lambda usage: self.body("chat.completion.chunk", [], usage=usage)
        )

    def whole(self, result: RowResult, usage: dict[str, int]) -> dict[str, Any]:
        """The non-streamed answer: the assistant's message."""
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "logprobs": None,
            "finish_reason": result.finish_reason,
        }
        return self.body("chat.completion", [choice], usage=usage)
