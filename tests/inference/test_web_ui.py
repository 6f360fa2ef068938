"""web_ui: the page served on loopback and driven in headless Chromium shows the greedy text of
base + LoRA adapter (computed by hand with peft), chat replies rendered with render_chat and cut
at the stop string, errors as messages in the page while the server keeps serving, and nothing
loaded from outside the machine; bad flags are one-line errors before any server starts."""

from __future__ import annotations

import os
import shutil
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import httpx
import peft
import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from llmfoundry.inference.chat_template import CHATML_END, render_chat
from llmfoundry.inference.generate import load_model_and_tokenizer
from llmfoundry.inference.options import ModelSource
from llmfoundry.inference.web_ui import WebUI, build_app, launch, serve_web_ui
from llmfoundry.utils.exceptions import ConfigError
from tests import REPO
from tests.command_utils.tiny_models import run_script
from tests.fixtures import save_lora_adapter, save_tiny_llama

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MAX_NEW_TOKENS = 12
WAIT_MS = 30_000
SYSTEM = "Be brief."
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Folders:
    llama: Path
    adapter: Path


@dataclass
class Served:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    page: WebUI


@pytest.fixture(scope="module")
def folders(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> Folders:
    """A tiny Llama (256 positions: ChatML markers cost ~8 tokens each) and a LoRA adapter on it."""
    root = tmp_path_factory.mktemp("web_ui")
    llama = save_tiny_llama(root / "llama", tokenizer, max_positions=256)
    adapter = save_lora_adapter(
        LlamaForCausalLM.from_pretrained(llama), root / "lora", ["q_proj", "v_proj"]
    )
    return Folders(llama, adapter)


@pytest.fixture(scope="module")
def served(folders: Folders) -> Iterator[Served]:
    """The page for base + adapter, on a free loopback port."""
    model, tokenizer = load_model_and_tokenizer(
        ModelSource(str(folders.llama), adapter=str(folders.adapter))
    )
    page = launch(build_app(model, tokenizer, max_new_tokens_limit=64, title="tiny llama + lora"))
    try:
        yield Served(model, tokenizer, page)
    finally:
        page.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), driven by Playwright."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (`make browser` installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[tuple[Any, list[str]]]:
    """A fresh tab on the page, and every URL the tab requested."""
    requested: list[str] = []
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    tab.on("request", lambda request: requested.append(request.url))
    tab.goto(served.page.url)
    tab.wait_for_selector("#generate-button", timeout=WAIT_MS)
    try:
        yield tab, requested
    finally:
        tab.close()


def peft_model(folders: Folders) -> Any:
    """Base + adapter loaded by hand with peft (not through the code under test)."""
    base = LlamaForCausalLM.from_pretrained(folders.llama)
    return peft.PeftModel.from_pretrained(base, str(folders.adapter)).eval()


@torch.no_grad()
def greedy(model: Any, tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    output = model.generate(
        input_ids=torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        pad_token_id=tokenizer.pad_token_id,
    )
    return str(tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True))


def prompt_ids(tokenizer: PreTrainedTokenizerBase, text: str, chat: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])


def set_slider(tab: Any, elem_id: str, value: int) -> None:
    box = tab.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def words(text: str) -> list[str]:
    return text.split()


def shown_words(locator: Any) -> list[str]:
    return words(str(locator.text_content()))


def assert_only_loopback(requested: list[str], served: Served) -> None:
    hosts = {urlparse(url).netloc for url in requested if not url.startswith(("data:", "blob:"))}
    assert hosts == {urlparse(served.page.url).netloc}, "the page loaded something from outside"


def test_generate_tab_shows_base_plus_adapter_greedy_text_and_errors_in_the_page(
    page: tuple[Any, list[str]],
    served: Served,
    folders: Folders,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playwright.sync_api import expect

    tab, requested = page
    tokenizer = served.tokenizer
    by_hand = peft_model(folders)
    first, second = "def parse(text):", "import json\n\nclass "
    expected = [greedy(by_hand, tokenizer, prompt_ids(tokenizer, p)) for p in (first, second)]
    with by_hand.disable_adapter():
        base_only = greedy(by_hand, tokenizer, prompt_ids(tokenizer, first))
    assert expected[0] and expected[0] != base_only, "the adapter must change the greedy text"

    output = tab.locator("#generate-output textarea")
    tab.locator("#generate-prompt textarea").fill(first)
    set_slider(tab, "generate-max-new-tokens", MAX_NEW_TOKENS)
    tab.locator("#generate-button").click()
    expect(output).to_have_value(expected[0], timeout=WAIT_MS)
    expect(tab.locator("#generate-stats")).to_contain_text(f"{MAX_NEW_TOKENS} tokens in")

    # A failing generation shows a message in the page; the next request is served.
    def out_of_memory(**kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(served.model, "generate", out_of_memory)
    tab.locator("#generate-prompt textarea").fill(second)
    tab.locator("#generate-button").click()
    error = tab.locator(".toast-body.error")
    expect(error).to_contain_text(
        "generation failed: RuntimeError: CUDA out of memory (simulated)", timeout=WAIT_MS
    )
    expect(output).to_have_value(expected[0])
    monkeypatch.undo()
    tab.locator("#generate-button").click()
    expect(output).to_have_value(expected[1], timeout=WAIT_MS)
    assert_only_loopback(requested, served)


def test_chat_tab_replies_as_render_chat_by_hand_cut_at_the_stop_string(
    page: tuple[Any, list[str]], served: Served, folders: Folders, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    tab, requested = page
    tokenizer = served.tokenizer
    by_hand = peft_model(folders)

    def reply_by_hand(messages: list[dict[str, str]]) -> str:
        text = greedy(
            by_hand, tokenizer, prompt_ids(tokenizer, render_chat(tokenizer, messages), True)
        )
        return text.split(CHATML_END)[0]

    first, second = "Hello, who are you?", "Tell me more."
    conversation = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": first}]
    reply = reply_by_hand(conversation)
    conversation += [{"role": "assistant", "content": reply}, {"role": "user", "content": second}]
    reply_2 = reply_by_hand(conversation)
    assert reply and reply_2

    tab.get_by_role("tab", name="Chat").click()
    tab.locator("#chat-system-prompt textarea").fill(SYSTEM)
    tab.locator("#chat-sample input[type=checkbox]").uncheck()
    set_slider(tab, "chat-max-new-tokens", MAX_NEW_TOKENS)
    message = tab.locator("#chat-message textarea")
    message.fill(first)
    tab.locator("#chat-send").click()
    bot = tab.locator("#chat-conversation [data-testid=bot] .message-content")
    expect(bot).to_have_count(1, timeout=WAIT_MS)
    # The chatbot trims whitespace at the edges of lines when it shows a message, so shown
    # text is compared up to whitespace. The page keeps each reply exact for the next turn,
    # which the second reply (generated after the first in full) checks.
    assert shown_words(bot.nth(0)) == words(reply)
    expect(message).to_have_value("")  # the box is cleared for the next message
    message.fill(second)
    message.press("Enter")  # the second turn sees the first (history kept in the page)
    expect(bot).to_have_count(2, timeout=WAIT_MS)
    assert shown_words(bot.nth(1)) == words(reply_2)
    users = tab.locator("#chat-conversation [data-testid=user] .message-content")
    assert users.all_text_contents() == [first, second]

    screenshot = tmp_path / "web_ui.png"
    tab.screenshot(path=str(screenshot), full_page=True)
    data = screenshot.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000 and height >= 600 and len(data) > 20_000
    artifacts = os.environ.get("LLMFOUNDRY_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / "web_ui.png")

    tab.locator("#chat-clear").click()
    expect(bot).to_have_count(0, timeout=WAIT_MS)
    assert_only_loopback(requested, served)


def test_launch_on_a_taken_port_is_a_user_error(served: Served) -> None:
    app = build_app(served.model, served.tokenizer)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--port={port}"):
            launch(app, port=port)


def test_script_reports_bad_model_and_foreign_adapter_before_serving(
    folders: Folders, tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    script = REPO / "scripts/inference/web_ui.py"
    missing = run_script(script, "--name_or_path", str(tmp_path / "missing"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        f"error: --name_or_path: model folder '{tmp_path / 'missing'}' does not exist"
    )

    wider = save_tiny_llama(tmp_path / "llama64", tokenizer, hidden=64)
    foreign = save_lora_adapter(
        cast(LlamaForCausalLM, LlamaForCausalLM.from_pretrained(wider)),
        tmp_path / "lora64",
        ["q_proj", "v_proj"],
    )
    result = run_script(
        script, "--name_or_path", str(folders.llama), "--adapter", str(foreign), "--port", "0"
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --adapter='{foreign}' does not fit the base model")


def test_serve_web_ui_serves_the_folder_until_wait_returns(folders: Folders) -> None:
    seen: dict[str, Any] = {}

    def visit(page: WebUI) -> None:
        seen["response"] = httpx.get(page.url, timeout=30)

    page = serve_web_ui(
        ModelSource(str(folders.llama), adapter=str(folders.adapter)), port=0, wait=visit
    )
    try:
        response = seen["response"]
        assert response.status_code == 200
        assert f"LLM Foundry: {folders.llama} + {folders.adapter}" in response.text
    finally:
        page.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(page.url, timeout=5)
