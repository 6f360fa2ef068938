"""Multi-turn chat with a causal LM: the logic of ``scripts/inference/hf_chat.py``.

Each turn renders the whole conversation with :func:`~llmfoundry.inference.chat_template.render_chat`
(the tokenizer's chat template, else ChatML) and streams the reply to an output stream while it
is generated. Typed commands: ``clear`` forgets the turns (the system prompt stays), ``history``
shows them, ``quit``/``exit`` (or the end of input) end the chat. When the conversation plus
``max_new_tokens`` no longer fits in ``max_seq_len`` tokens, the oldest user/assistant pairs are
dropped. The loop reads from any iterator of lines and writes to any text stream, so it runs
without a terminal.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.streamers import BaseStreamer

from llmfoundry.inference.chat_template import render_chat, stop_strings
from llmfoundry.inference.generate import (
    autocast_context,
    generation_token_ids,
    load_for_generation,
)
from llmfoundry.inference.model_loading import context_length_of
from llmfoundry.inference.options import WARMUP_MESSAGE, ModelSource, Sampling
from llmfoundry.utils.exceptions import ConfigError

logger = logging.getLogger(__name__)

CLEAR_COMMANDS = ("clear",)
HISTORY_COMMANDS = ("history",)
QUIT_COMMANDS = ("quit", "exit")
CHAT_SAMPLING = Sampling(max_new_tokens=512, do_sample=True)
"""The chat's decoding defaults (``hf_chat``'s flags): longer replies, sampled."""


class StopStringStreamer(BaseStreamer):
    """Writes generated text to a stream as tokens arrive, and cuts it at the first stop string.

    Text that could still turn into a stop string (a prefix of one at the end) or into a
    multi-byte character (a trailing replacement character) is held back until the next token
    decides it. The prompt, handed over first by ``generate``, is skipped.

    Attributes:
        text: the reply so far, without any stop string.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, output: TextIO, stops: Sequence[str] = ()
    ) -> None:
        self.tokenizer = tokenizer
        self.output = output
        self.stops = [s for s in stops if s]
        self.text = ""
        self._ids: list[int] = []
        self._written = 0
        self._seen_prompt = False
        self._stopped = False

    def put(self, value: torch.Tensor) -> None:
        """Take the next token(s) of a batch-of-one generation."""
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        if self._stopped:
            return
        self._ids.extend(int(i) for i in value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        """Write what was held back (generation is over)."""
        if not self._stopped:
            self._flush(final=True)

    def _held_back(self, text: str) -> int:
        """How many trailing characters of ``text`` may still change or start a stop string."""
        hold = len(text) - len(text.rstrip("\ufffd"))
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:length]):
                    hold = max(hold, length)
                    break
        return hold

    def _flush(self, final: bool) -> None:
        text = str(self.tokenizer.decode(self._ids, skip_special_tokens=True))
        cuts = [text.find(stop) for stop in self.stops if stop in text]
        if cuts:
            text = text[: min(cuts)]
            self._stopped = True
        elif not final:
            text = text[: len(text) - self._held_back(text)]
        if len(text) > self._written:
            self.output.write(text[self._written :])
            self.output.flush()
            self._written = len(text)
        self.text = text


class ChatSession:
    """A conversation with a model: its turns, truncation to the context, and streamed replies.

    Args:
        model: a causal LM (eval mode).
        tokenizer: its tokenizer.
        system_prompt: the first message of every rendering; never dropped.
        max_new_tokens: the most tokens of one reply.
        max_seq_len: prompt plus reply must fit in this many tokens (default: the model's
            maximum positions; no limit if the config names none).
        generate_kwargs: more ``model.generate`` arguments (sampling, ``eos_token_id``...).
        autocast_dtype: run generation under ``torch.autocast`` in this dtype.
        output: where replies stream to (default: stdout).
        notices: where truncation and too-long notices go (default: stderr).
        stop_tokens: more tokens that end a reply (LLM Foundry's ``--stop_tokens``: one string
            split at spaces, or a list). A vocabulary entry (``<|im_end|>``, ``Ġreturn``) ends
            generation as an EOS token does, and the reply is cut before its text; any other
            string is a stop string (generation ends once the text holds it, cut before it).

    Raises:
        ConfigError: if ``max_new_tokens`` alone does not fit in ``max_seq_len``.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        system_prompt: str | None = None,
        max_new_tokens: int = 512,
        max_seq_len: int | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        autocast_dtype: str | None = None,
        output: TextIO | None = None,
        notices: TextIO | None = None,
        stop_tokens: str | Sequence[str] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.max_new_tokens = max_new_tokens
        self.max_seq_len = max_seq_len if max_seq_len is not None else context_length_of(model)
        if self.max_seq_len is not None and max_new_tokens >= self.max_seq_len:
            raise ConfigError(
                f"--max_new_tokens={max_new_tokens} leaves no room for the conversation in "
                f"--max_seq_len={self.max_seq_len}; lower it or raise --max_seq_len"
            )
        self.generate_kwargs = dict(generate_kwargs or {})
        self.autocast_dtype = autocast_dtype
        # Looked up now, not at import: a caller may have redirected them.
        self.output = output or sys.stdout
        self.notices = notices or sys.stderr
        self.turns: list[dict[str, str]] = []
        self._told_about_truncation = False
        words = stop_tokens.split() if isinstance(stop_tokens, str) else list(stop_tokens or ())
        vocab = tokenizer.get_vocab()
        self.stop_token_ids = sorted({vocab[w] for w in words if w in vocab})
        # A vocabulary entry (``Ġreturn``) ends the text where its decoded form (" return")
        # starts; any other stop token is matched as text.
        texts = (str(tokenizer.decode([vocab[w]])) if w in vocab else w for w in words)
        self.stop_texts = [text for text in dict.fromkeys(texts) if text]

    def messages(self, next_user_message: str | None = None) -> list[dict[str, str]]:
        """The system prompt, the kept turns and, if given, the next user message."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        pending = [{"role": "user", "content": next_user_message}] if next_user_message else []
        return [*system, *self.turns, *pending]

    def clear(self) -> None:
        """Forget every turn; the system prompt stays."""
        self.turns.clear()

    def format_history(self) -> str:
        """The conversation as ``[role] content`` lines (the system prompt first)."""
        messages = self.messages()
        if not messages:
            return "(no history)\n"
        return "".join(f"[{m['role']}] {m['content']}\n" for m in messages)

    def _prompt_ids(self, user_message: str) -> list[int]:
        text = render_chat(self.tokenizer, self.messages(user_message))
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def fit_prompt(self, user_message: str) -> list[int] | None:
        """The prompt's token ids, after dropping the oldest turn pairs until it fits.

        Returns:
            None (and a notice) if the message is too long even with no earlier turns; the
            turns are then left as they were.
        """
        ids = self._prompt_ids(user_message)
        if self.max_seq_len is None or len(ids) + self.max_new_tokens <= self.max_seq_len:
            return ids
        kept = self.turns
        self.turns = []
        alone = len(self._prompt_ids(user_message))
        self.turns = kept
        if alone + self.max_new_tokens > self.max_seq_len:
            self.notices.write(
                f"message too long: it renders to {alone} tokens, and with --max_new_tokens="
                f"{self.max_new_tokens} that exceeds --max_seq_len={self.max_seq_len}; "
                "send a shorter message\n"
            )
            return None
        if not self._told_about_truncation:
            self.notices.write(
                f"the conversation no longer fits in --max_seq_len={self.max_seq_len} tokens "
                f"with --max_new_tokens={self.max_new_tokens}: dropping the oldest turns "
                "(the system prompt is kept)\n"
            )
            self._told_about_truncation = True
        while len(ids) + self.max_new_tokens > self.max_seq_len:
            del self.turns[:2]  # the oldest user message and its reply
            ids = self._prompt_ids(user_message)
        return ids

    @torch.no_grad()
    def reply(self, user_message: str) -> str | None:
        """Answer ``user_message``, streaming the reply to ``output``; keep both as a turn.

        Returns:
            The reply (without any stop string), or None if the message could not fit.
        """
        ids = self.fit_prompt(user_message)
        if ids is None:
            return None
        eos, pad = generation_token_ids(
            self.model,
            self.tokenizer,
            self.generate_kwargs.get("eos_token_id"),
            self.generate_kwargs.get("pad_token_id"),
        )
        if self.stop_token_ids:
            eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
            eos = list(dict.fromkeys([*eos_ids, *self.stop_token_ids]))
        stops = list(dict.fromkeys([*stop_strings(self.tokenizer), *self.stop_texts]))
        streamer = StopStringStreamer(self.tokenizer, self.output, stops)
        kwargs: dict[str, Any] = {
            **self.generate_kwargs,
            "max_new_tokens": self.max_new_tokens,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "streamer": streamer,
        }
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=self.tokenizer)
        input_ids = torch.tensor([ids], device=self.model.device)
        with autocast_context(self.model.device.type, self.autocast_dtype):
            cast(Any, self.model).generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs
            )
        self.turns.append({"role": "user", "content": user_message})
        self.turns.append({"role": "assistant", "content": streamer.text})
        return streamer.text


def run_chat(session: ChatSession, lines: Iterable[str], output: TextIO | None = None) -> None:
    """Read user messages and commands from ``lines`` until ``quit``/``exit`` or their end.

    Args:
        session: the conversation.
        lines: what the user types, one message or command per item.
        output: where command results and the ``Assistant:`` label go (default: the
            session's output).
    """
    out = output or session.output
    for line in lines:
        message = line.strip()
        command = message.lower()
        if command in QUIT_COMMANDS:
            break
        if command in CLEAR_COMMANDS:
            session.clear()
            out.write("(history cleared)\n")
        elif command in HISTORY_COMMANDS:
            out.write(session.format_history())
        elif message:
            out.write("Assistant: ")
            out.flush()
            if session.reply(message) is None:
                out.write("(no reply)")
            out.write("\n")
        out.flush()


def chat_from_pretrained(
    source: ModelSource,
    lines: Iterable[str],
    sampling: Sampling = CHAT_SAMPLING,
    *,
    system_prompt: str | None = None,
    stop_tokens: str | Sequence[str] | None = None,
    warmup: bool = False,
    output: TextIO | None = None,
    notices: TextIO | None = None,
) -> ChatSession:
    """Load a model (:func:`~llmfoundry.inference.generate.load_for_generation`) and chat with
    it over ``lines``. ``source.max_seq_len`` also bounds the conversation (see
    :class:`ChatSession`, as do ``stop_tokens``); ``sampling.seed`` seeds torch first. With
    ``warmup`` the model first answers :data:`WARMUP_MESSAGE`, as LLM Foundry's chat does,
    and that turn stays in the conversation.

    Returns:
        The session, with the turns it kept.

    Raises:
        ConfigError, MissingFileError, MissingDependencyError, TokenizerError: on a bad flag,
            path, missing package or tokenizer.
    """
    kwargs = sampling.generate_kwargs()
    model, tokenizer = load_for_generation(source)
    torch.manual_seed(sampling.seed)
    session = ChatSession(
        model,
        tokenizer,
        system_prompt=system_prompt,
        max_new_tokens=sampling.max_new_tokens,
        max_seq_len=source.max_seq_len,
        generate_kwargs=kwargs,
        autocast_dtype=source.autocast_dtype,
        output=output,
        notices=notices,
        stop_tokens=stop_tokens,
    )
    run_chat(session, itertools.chain([WARMUP_MESSAGE] if warmup else [], lines))
    return session
