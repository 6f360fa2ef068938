"""hf_chat: the exact conversation handed to the model, streamed replies, stop strings, the
clear/history/quit commands, and truncation of old turns to fit --max_seq_len."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmfoundry.inference.chat import (
    CHAT_SAMPLING,
    ChatSession,
    StopStringStreamer,
    chat_from_pretrained,
    run_chat,
)
from llmfoundry.inference.generate import load_model_and_tokenizer
from llmfoundry.inference.options import WARMUP_MESSAGE, ModelSource
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from tests import REPO
from tests.command_utils.tiny_models import run_script
from tests.fixtures import save_tiny_llama

SYSTEM = "Be brief."


def chatml(*messages: tuple[str, str], open_reply: bool = True) -> str:
    """The ChatML text of ``messages`` (the fixture tokenizer has no chat template)."""
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return text + ("<|im_start|>assistant\n" if open_reply else "")


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A tiny Llama with 256 positions: ChatML markers cost ~8 tokens each with this tokenizer."""
    return save_tiny_llama(tmp_path_factory.mktemp("chat") / "llama", tokenizer, max_positions=256)


class Recorder:
    """Wraps ``model.generate`` to keep the prompt ids, the output and the keyword arguments."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.calls: list[tuple[list[int], torch.Tensor, dict[str, Any]]] = []
        self._generate = cast(Any, model).generate
        cast(Any, model).generate = self

    def __call__(self, **kwargs: Any) -> torch.Tensor:
        output = self._generate(**kwargs)
        self.calls.append((kwargs["input_ids"][0].tolist(), output, kwargs))
        return output

    def prompt_ids(self, index: int) -> list[int]:
        return self.calls[index][0]


@pytest.fixture
def model_and_tokenizer(chat_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return load_model_and_tokenizer(ModelSource(str(chat_dir)))


def _session(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kwargs: Any
) -> tuple[ChatSession, io.StringIO, io.StringIO]:
    out, notices = io.StringIO(), io.StringIO()
    options: dict[str, Any] = {"system_prompt": SYSTEM, "max_new_tokens": 6, **kwargs}
    session = ChatSession(
        model,
        tokenizer,
        generate_kwargs={"do_sample": False},
        output=out,
        notices=notices,
        **options,
    )
    return session, out, notices


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_two_turns_hand_the_whole_conversation_to_the_model(
    model_and_tokenizer: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = Recorder(model)
    session, out, _ = _session(model, tokenizer)
    run_chat(session, ["Hi there", "  And then?  "])
    first_reply = session.turns[1]["content"]
    second_reply = session.turns[3]["content"]
    first = chatml(("system", SYSTEM), ("user", "Hi there"))
    second = chatml(
        ("system", SYSTEM),
        ("user", "Hi there"),
        ("assistant", first_reply),
        ("user", "And then?"),
    )
    assert recorder.prompt_ids(0) == _ids(tokenizer, first)
    assert recorder.prompt_ids(1) == _ids(tokenizer, second)
    # The reply kept in the history is the decoded generation, and it is what was streamed.
    prompt_len = len(recorder.prompt_ids(0))
    generated = recorder.calls[0][1][0, prompt_len:]
    assert first_reply == tokenizer.decode(generated, skip_special_tokens=True)
    assert first_reply and second_reply
    assert out.getvalue() == f"Assistant: {first_reply}\nAssistant: {second_reply}\n"
    assert recorder.calls[0][2]["stop_strings"] == ["<|im_end|>"]


def test_clear_history_and_quit(
    model_and_tokenizer: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = Recorder(model)
    session, out, _ = _session(model, tokenizer)
    run_chat(session, ["Hi", "history", "CLEAR", "history", "Again", "quit", "never sent"])
    reply = tokenizer.decode(
        recorder.calls[0][1][0, len(recorder.prompt_ids(0)) :], skip_special_tokens=True
    )
    again = session.turns[1]["content"]
    assert out.getvalue() == (
        f"Assistant: {reply}\n"
        f"[system] {SYSTEM}\n[user] Hi\n[assistant] {reply}\n"
        "(history cleared)\n"
        f"[system] {SYSTEM}\n"
        f"Assistant: {again}\n"
    )
    assert len(recorder.calls) == 2, "nothing after quit is sent"
    # After clear, the model sees the system prompt and the new message only.
    assert recorder.prompt_ids(1) == _ids(tokenizer, chatml(("system", SYSTEM), ("user", "Again")))
    # exit and the end of input also end the chat
    run_chat(session, ["exit", "never sent"])
    run_chat(session, iter([]))
    assert len(recorder.calls) == 2


def test_truncation_drops_the_oldest_pair_and_keeps_the_system_prompt(
    model_and_tokenizer: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = Recorder(model)
    old = [("user", "first question"), ("assistant", "first answer")]
    recent = [("user", "second question"), ("assistant", "second answer")]
    kept = chatml(("system", SYSTEM), *recent, ("user", "third"))
    everything = chatml(("system", SYSTEM), *old, *recent, ("user", "third"))
    max_new_tokens = 6
    # Room for the newest pair and the new message, not for the oldest pair too.
    max_seq_len = len(_ids(tokenizer, kept)) + max_new_tokens
    assert len(_ids(tokenizer, everything)) + max_new_tokens > max_seq_len
    session, _, notices = _session(model, tokenizer, max_seq_len=max_seq_len)
    session.turns = [{"role": r, "content": c} for r, c in [*old, *recent]]
    session.reply("third")
    assert recorder.prompt_ids(0) == _ids(tokenizer, kept)
    assert [t["content"] for t in session.turns[:3]] == [
        "second question",
        "second answer",
        "third",
    ]
    session.reply("fourth")  # drops again, without a second notice
    assert session.turns[0]["content"] == "third"
    assert str(tokenizer.decode(recorder.prompt_ids(1))).startswith(
        chatml(("system", SYSTEM), open_reply=False)
    )
    assert all(len(ids) + max_new_tokens <= max_seq_len for ids, _, _ in recorder.calls)
    assert notices.getvalue().count("dropping the oldest turns") == 1


def test_a_message_too_long_alone_is_refused_and_the_chat_goes_on(
    model_and_tokenizer: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = Recorder(model)
    max_seq_len = len(_ids(tokenizer, chatml(("system", SYSTEM), ("user", "short")))) + 6
    session, out, notices = _session(model, tokenizer, max_seq_len=max_seq_len)
    run_chat(session, ["word " * 40, "short"])
    assert notices.getvalue().startswith("message too long: it renders to ")
    assert f"exceeds --max_seq_len={max_seq_len}" in notices.getvalue()
    assert len(recorder.calls) == 1
    assert [t["content"] for t in session.turns][:1] == ["short"]
    assert out.getvalue().startswith("Assistant: (no reply)\nAssistant: ")


def _forced_session(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    spare_tokens: int,
    out: io.StringIO,
    **options: Any,
) -> tuple[ChatSession, list[int]]:
    """A greedy session whose replies spell ``text`` (its ids, also returned), with room for
    ``spare_tokens`` more; ``options`` go to ``ChatSession``."""
    forced = _ids(tokenizer, text)
    # Each longer prefix of the forced ids gets a larger bias, so greedy decoding spells it out.
    bias = {tuple(forced[: i + 1]): 50.0 * (i + 1) for i in range(len(forced))}
    session = ChatSession(
        model,
        tokenizer,
        max_new_tokens=len(forced) + spare_tokens,
        generate_kwargs={"do_sample": False, "sequence_bias": bias},
        output=out,
        notices=io.StringIO(),
        **options,
    )
    return session, forced


def test_generation_stops_at_the_chatml_end_marker(
    model_and_tokenizer: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = Recorder(model)
    out = io.StringIO()
    session, forced = _forced_session(model, tokenizer, "Sure.<|im_end|>", 10, out)
    assert session.reply("Hi") == "Sure."
    assert out.getvalue() == "Sure."
    prompt_ids, output, _ = recorder.calls[0]
    assert output.shape[1] - len(prompt_ids) == len(forced), "stopped right after the marker"
    assert session.turns[-1] == {"role": "assistant", "content": "Sure."}


def test_streamer_writes_as_tokens_arrive_and_never_a_stop_string(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    out = io.StringIO()
    streamer = StopStringStreamer(tokenizer, out, ["<|im_end|>"])
    streamer.put(torch.tensor([[5, 6, 7]]))  # the prompt: skipped
    snapshots = []
    for token in _ids(tokenizer, "Hello world, again<|im_end|>junk after"):
        streamer.put(torch.tensor([token]))
        snapshots.append(out.getvalue())
    streamer.end()
    assert out.getvalue() == streamer.text == "Hello world, again"
    assert all("Hello world, again".startswith(s) for s in snapshots)
    assert len(set(snapshots)) > 3, "text is streamed while it is generated"
    # A stop-string prefix left at the very end is real text: written when generation ends.
    tail = io.StringIO()
    streamer = StopStringStreamer(tokenizer, tail, ["<|im_end|>"])
    streamer.put(torch.tensor([[5]]))
    for token in _ids(tokenizer, "a <|im"):
        streamer.put(torch.tensor([token]))
    assert tail.getvalue() == "a "
    streamer.end()
    assert tail.getvalue() == "a <|im"


def test_bad_settings_name_the_flag(chat_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"--max_new_tokens=300 leaves no room .*--max_seq_len=256"
    ):
        chat_from_pretrained(
            ModelSource(str(chat_dir), device="cpu"),
            [],
            dataclasses.replace(CHAT_SAMPLING, max_new_tokens=300),
        )
    with pytest.raises(ConfigError, match=r"--autocast_dtype=fp16 does not run on CPU"):
        chat_from_pretrained(ModelSource(str(chat_dir), autocast_dtype="fp16", device="cpu"), [])
    with pytest.raises(MissingFileError, match=r"--name_or_path: model folder '.*absent'"):
        chat_from_pretrained(ModelSource(str(tmp_path / "absent")), [])


def test_script_chats_over_stdin_until_eof(chat_dir: Path) -> None:
    result = run_script(
        REPO / "scripts/inference/hf_chat.py",
        "--name_or_path", str(chat_dir),
        "--system_prompt", SYSTEM,
        "--max_new_tokens", "4",
        "--do_sample", "false",
        "--device", "cpu",
        stdin="Hi\nhistory\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Assistant: " in result.stdout
    # As in LLM Foundry, the chat opens with a warm-up turn that stays in the conversation.
    assert f"[system] {SYSTEM}\n[user] {WARMUP_MESSAGE}\n[assistant] " in result.stdout
    assert "\n[user] Hi\n[assistant] " in result.stdout


@pytest.mark.parametrize(
    ("stop_tokens", "reply", "generated"),
    [
        # A vocabulary entry: generation ends on its id; the reply ends before its text.
        ("Ġreturn <|im_end|>", "Sure.", "Sure. return"),
        # Not a single token: a stop string, matched in the text.
        ("re.", "Su", "Sure."),
    ],
)
def test_stop_tokens_end_the_reply(
    model_and_tokenizer: tuple[PreTrainedModel, PreTrainedTokenizerBase],
    stop_tokens: str,
    reply: str,
    generated: str,
) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = Recorder(model)
    out = io.StringIO()
    session, _ = _forced_session(
        model, tokenizer, "Sure. return 1 more text", 5, out, stop_tokens=stop_tokens
    )
    assert session.reply("Hi") == reply
    assert out.getvalue() == reply
    prompt_ids, output, _ = recorder.calls[0]
    assert output[0, len(prompt_ids) :].tolist() == _ids(tokenizer, generated)
    assert session.turns[-1] == {"role": "assistant", "content": reply}
