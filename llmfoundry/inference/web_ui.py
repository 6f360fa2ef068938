"""A browser page for trying a model folder: the logic of ``scripts/inference/web_ui.py``.

The page (built with Gradio) has two tabs over one loaded model (a base model, optionally with
a peft LoRA adapter):

- **Generate**: a prompt, sampling controls and the continuation the model writes after it
  (:func:`~llmfoundry.inference.generate.generate_batch`).
- **Chat**: a conversation with a system prompt, rendered with
  :func:`~llmfoundry.inference.chat_template.render_chat` and cut at its stop strings; each
  turn runs a :class:`~llmfoundry.inference.chat.ChatSession`, so old turns are dropped the
  same way the terminal chat drops them.

The page works offline: Gradio's telemetry and version check are switched off, no share link is
made and every asset is served by the local server. A generation error is shown in the page
and the server keeps serving. :func:`build_app` and :func:`launch` let a test start the page on
a loopback port and drive it with a browser.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmfoundry.inference.chat import ChatSession
from llmfoundry.inference.generate import generate_batch, load_for_generation
from llmfoundry.inference.model_loading import context_length_of
from llmfoundry.inference.options import ModelSource, Sampling
from llmfoundry.inference.web_ui_launch import (
    DEFAULT_HOST,
    LOOPBACK_HOSTS,
    OFFLINE_ENV,
    WebUI,
    free_port,
    import_gradio,
    launch,
)
from llmfoundry.utils.cli_utils import one_line
from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.exceptions import ConfigError, UserError

if TYPE_CHECKING:
    import gradio as gr

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HOST",
    "LOOPBACK_HOSTS",
    "OFFLINE_ENV",
    "ChatTurnResult",
    "WebUI",
    "build_app",
    "chat_turn",
    "free_port",
    "generate_text",
    "import_gradio",
    "launch",
    "serve_web_ui",
]

DEFAULT_MAX_NEW_TOKENS_LIMIT = 512
# The sliders' starting value, lowered to half the model's context when that is shorter.
DEFAULT_MAX_NEW_TOKENS = 128
# The sampling sliders: the Sampling field, label, range and step (they start at its default).
SLIDERS = (
    ("temperature", "Temperature", 0.05, 2.0, 0.05),
    ("top_p", "Top-p", 0.05, 1.0, 0.05),
    ("top_k", "Top-k (0: all)", 0, 200, 1),
    ("repetition_penalty", "Repetition penalty", 0.5, 2.0, 0.05),
)


def page_generate_kwargs(sampling: Sampling, max_new_tokens_limit: int) -> dict[str, Any]:
    """The ``model.generate`` arguments for the page's controls (without ``max_new_tokens``).

    Raises:
        ConfigError: for ``max_new_tokens`` outside 1..``max_new_tokens_limit`` or invalid
            sampling values.
    """
    if not 1 <= sampling.max_new_tokens <= max_new_tokens_limit:
        raise ConfigError(
            f"max new tokens must be between 1 and {max_new_tokens_limit}, "
            f"got {sampling.max_new_tokens}"
        )
    return sampling.generate_kwargs()


def generate_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    sampling: Sampling,
    max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS_LIMIT,
) -> tuple[str, str]:
    """The Generate tab: the model's continuation of ``prompt``.

    Returns:
        The continuation (special tokens removed) and a one-line speed report.

    Raises:
        ConfigError: for an empty prompt or invalid sampling controls.
    """
    if not prompt:
        raise ConfigError("the prompt is empty; type a prompt first")
    kwargs = page_generate_kwargs(sampling, max_new_tokens_limit)
    result = generate_batch(model, tokenizer, [prompt], sampling.max_new_tokens, **kwargs)
    stats = (
        f"{result.new_tokens} tokens in {result.latency_s:.2f} s "
        f"({result.tokens_per_s:.1f} tokens/s)"
    )
    return result.generations[0].continuation, stats


@dataclass
class ChatTurnResult:
    """What one chat turn produced.

    Attributes:
        reply: the assistant's reply, cut at the first stop string.
        turns: the user/assistant turns the model will see next time (oldest ones dropped
            when the conversation outgrew the context).
        notice: a note for the user (turns were dropped), or empty.
    """

    reply: str
    turns: list[dict[str, str]]
    notice: str


def chat_turn(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    turns: list[dict[str, str]],
    message: str,
    system_prompt: str,
    sampling: Sampling,
    max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS_LIMIT,
) -> ChatTurnResult:
    """The Chat tab: answer ``message`` after the earlier ``turns`` (which are not changed).

    Args:
        model: the causal LM.
        tokenizer: its tokenizer.
        turns: the earlier user/assistant turns, oldest first.
        message: the user's new message.
        system_prompt: the system message; empty for none.
        sampling: the sampling controls.
        max_new_tokens_limit: the largest ``max_new_tokens`` allowed.

    Raises:
        ConfigError: for an empty or too long message, or invalid sampling controls.
    """
    if not message.strip():
        raise ConfigError("the message is empty; type a message first")
    notices = io.StringIO()
    session = ChatSession(
        model,
        tokenizer,
        system_prompt=system_prompt or None,
        max_new_tokens=sampling.max_new_tokens,
        generate_kwargs=page_generate_kwargs(sampling, max_new_tokens_limit),
        output=io.StringIO(),  # the page shows the reply once it is complete
        notices=notices,
    )
    session.turns = [dict(turn) for turn in turns]
    reply = session.reply(message)
    if reply is None:
        raise ConfigError(one_line(notices.getvalue()))
    return ChatTurnResult(reply, session.turns, one_line(notices.getvalue()))


@contextmanager
def errors_in_page(gr: ModuleType, what: str) -> Iterator[None]:
    """Turn an exception into a ``gr.Error``, which the page shows as a message.

    User errors show their own one-line message; anything else (out of memory, a model bug)
    is logged with its traceback and shown as its type and first line.
    """
    try:
        yield
    except UserError as err:
        raise gr.Error(one_line(err), print_exception=False) from err
    except Exception as err:
        logger.exception("%s failed", what)
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise gr.Error(
            f"{what} failed: {type(err).__name__}: {message}", print_exception=False
        ) from err


def _sampling_controls(
    gr: ModuleType, prefix: str, max_new_tokens: int, limit: int, do_sample: bool
) -> list[Any]:
    """The sampling widgets: max new tokens, the sample checkbox, then ``SLIDERS``."""
    return [
        gr.Slider(
            1,
            limit,
            value=max_new_tokens,
            step=1,
            label="Max new tokens",
            elem_id=f"{prefix}-max-new-tokens",
        ),
        gr.Checkbox(
            value=do_sample, label="Sample (greedy when unchecked)", elem_id=f"{prefix}-sample"
        ),
        *(
            gr.Slider(
                low,
                high,
                value=getattr(Sampling(), name),
                step=step,
                label=label,
                elem_id=f"{prefix}-{name.replace('_', '-')}",
            )
            for name, label, low, high, step in SLIDERS
        ),
    ]


def _sampling(values: tuple[Any, ...]) -> Sampling:
    """The :class:`Sampling` of the widgets' values (in :func:`_sampling_controls`' order)."""
    max_new_tokens, do_sample, *slider_values = values
    sliders = {
        name: type(getattr(Sampling(), name))(value)
        for (name, *_), value in zip(SLIDERS, slider_values, strict=True)
    }
    return Sampling(max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample), **sliders)


def default_max_new_tokens(model: PreTrainedModel, limit: int) -> int:
    """Where the max-new-tokens sliders start: ``DEFAULT_MAX_NEW_TOKENS``, at most ``limit``
    and at most half the model's context (so a chat turn has room for the conversation)."""
    value = min(DEFAULT_MAX_NEW_TOKENS, limit)
    positions = context_length_of(model)
    if positions is not None:
        value = min(value, max(positions // 2, 1))
    return value


def _generate_tab(gr: ModuleType, on_generate: Callable[..., Any], start: int, limit: int) -> None:
    """The Generate tab: a prompt, its continuation and the sampling controls."""
    with gr.Tab("Generate", id="generate"), gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=4, elem_id="generate-prompt", autofocus=True)
            generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
            output = gr.Textbox(
                label="Output (the continuation)",
                lines=6,
                interactive=False,
                elem_id="generate-output",
            )
            stats = gr.Markdown(elem_id="generate-stats")
        with gr.Column(scale=1):
            controls = _sampling_controls(gr, "generate", start, limit, False)
        generate_button.click(
            on_generate, [prompt, *controls], [output, stats], api_name="generate"
        )


def _chat_tab(
    gr: ModuleType,
    on_send: Callable[..., Any],
    on_clear: Callable[..., Any],
    start: int,
    limit: int,
) -> None:
    """The Chat tab: the conversation, a message box, a system prompt and the controls."""
    with gr.Tab("Chat", id="chat"):
        # Every message, as the chatbot shows it; and the turns the model sees (the
        # oldest are dropped once the conversation outgrows the context).
        shown = gr.State([])
        turns = gr.State([])
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    label="Conversation",
                    render_markdown=False,
                    buttons=["copy", "copy_all"],  # no "share": it posts to the Hub
                    elem_id="chat-conversation",
                )
                message = gr.Textbox(
                    label="Message",
                    placeholder="Type a message and press Enter",
                    elem_id="chat-message",
                )
                with gr.Row():
                    send_button = gr.Button("Send", variant="primary", elem_id="chat-send")
                    clear_button = gr.Button("Clear", elem_id="chat-clear")
            with gr.Column(scale=1):
                system_prompt = gr.Textbox(
                    label="System prompt", lines=3, elem_id="chat-system-prompt"
                )
                controls = _sampling_controls(gr, "chat", start, limit, True)
        send_inputs = [message, system_prompt, shown, turns, *controls]
        send_outputs = [chatbot, shown, turns, message]
        send_button.click(on_send, send_inputs, send_outputs, api_name="chat")
        message.submit(on_send, send_inputs, send_outputs, api_name=False)
        clear_button.click(on_clear, None, send_outputs, api_name=False)
        chatbot.clear(on_clear, None, send_outputs, api_name=False)


def _check_token_limit(max_new_tokens_limit: int) -> None:
    """Fail on a ``--max_new_tokens_limit`` below 1 (checked before a model is loaded).

    Raises:
        ConfigError: naming the flag and its value.
    """
    check_value(max_new_tokens_limit, PositiveInt, "--max_new_tokens_limit")


def build_app(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS_LIMIT,
    title: str = "LLM Foundry",
) -> gr.Blocks:
    """The page: a Generate tab and a Chat tab over ``model``.

    Requests are served one at a time (the model is shared by both tabs). Text is shown as the
    model wrote it, not rendered as Markdown or HTML.

    Args:
        model: the causal LM (eval mode; a ``peft.PeftModel`` works too).
        tokenizer: its tokenizer (``padding_side`` left).
        max_new_tokens_limit: the top of the max-new-tokens sliders.
        title: the page's heading (e.g. the model folder).

    Returns:
        The Gradio app, not launched (see :func:`launch`).

    Raises:
        ConfigError: if ``max_new_tokens_limit`` is not positive.
        MissingDependencyError: if Gradio is not installed.
    """
    _check_token_limit(max_new_tokens_limit)
    gr = import_gradio()
    limit = max_new_tokens_limit
    start = default_max_new_tokens(model, limit)
    model_lock = threading.Lock()  # both tabs share one model

    def on_generate(prompt: str, *controls: Any) -> tuple[str, str]:
        with errors_in_page(gr, "generation"), model_lock:
            return generate_text(model, tokenizer, prompt, _sampling(controls), limit)

    def on_send(
        message: str,
        system_prompt: str,
        shown: list[dict[str, str]],
        turns: list[dict[str, str]],
        *controls: Any,
    ) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]], str]:
        with errors_in_page(gr, "chat"), model_lock:
            result = chat_turn(
                model, tokenizer, turns, message, system_prompt, _sampling(controls), limit
            )
        if result.notice:
            gr.Warning(result.notice)
        new = [{"role": "user", "content": message}, {"role": "assistant", "content": result.reply}]
        shown = [*shown, *new]
        return shown, shown, result.turns, ""

    def on_clear() -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]], str]:
        return [], [], [], ""

    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"## {title}")
        with gr.Tabs():
            _generate_tab(gr, on_generate, start, limit)
            _chat_tab(gr, on_send, on_clear, start, limit)
    return app


def serve_web_ui(
    source: ModelSource,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS_LIMIT,
    seed: int = 42,
    wait: Callable[[WebUI], None] = WebUI.wait,
) -> WebUI:
    """Load a model (plus an optional LoRA adapter) and serve the page for it.

    Every flag is checked and the model loaded before the server starts.

    Args:
        source: the model to load (``autocast_dtype`` is not supported: the page generates
            in the weights' dtype, ``model_dtype``).
        host: the address to listen on.
        port: the port; 0 or None picks a free one.
        max_new_tokens_limit: the top of the max-new-tokens sliders.
        seed: the torch seed set before serving (sampled text is still not reproducible
            across requests).
        wait: called with the running page; the default serves until Ctrl-C, then stops.

    Returns:
        The page, after ``wait`` returned.

    Raises:
        ConfigError, MissingFileError, MissingDependencyError, TokenizerError: on a bad flag,
            a missing folder, an adapter for another base model, or missing packages.
    """
    _check_token_limit(max_new_tokens_limit)
    if source.autocast_dtype is not None:
        raise ConfigError(
            "the web UI does not take --autocast_dtype; choose the weights' dtype with --model_dtype"
        )
    import_gradio()  # fail on a missing extra before spending time on the model
    model, tokenizer = load_for_generation(source)
    torch.manual_seed(seed)
    name = source.name_or_path
    title = f"LLM Foundry: {name}" + (f" + {source.adapter}" if source.adapter else "")
    app = build_app(model, tokenizer, max_new_tokens_limit=max_new_tokens_limit, title=title)
    page = launch(app, host, port)
    logger.info("web UI for %s is at %s (Ctrl-C stops it)", name, page.url)
    wait(page)
    return page
