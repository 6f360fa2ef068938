"""openai_causal_lm / openai_chat: ICL evaluation through our own OpenAI-compatible endpoint
(a tiny MPT served on loopback) gives the local model's log-probabilities, answers and metric
values; the endpoint's ``logprobs`` are the model's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import torch
from composer.models import HuggingFaceModel
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.chat_template import render_chat
from llmfoundry.command_utils.serve import (
    RunningServer,
    ServeConfig,
    ServedModel,
    load_served_model,
    start_server,
)
from llmfoundry.eval.metrics import (
    ICL_METRICS,
    InContextLearningLMAccuracy,
    InContextLearningMultipleChoiceAccuracy,
    continuation_log_likelihoods,
)
from llmfoundry.models.hf.export import save_mpt_as_hf
from llmfoundry.models.inference_api import (
    OpenAICausalLMEvalWrapper,
    OpenAIChatAPIEvalWrapper,
    OpenAIClient,
)
from llmfoundry.models.inference_api.wrappers import DEFAULT_SYSTEM_ROLE_PROMPT
from llmfoundry.utils.builders import build_composer_model_from_section
from llmfoundry.utils.exceptions import ConfigError, UserError
from tests.eval.helpers import icl_evaluators, lm_task, run_eval, write_jsonl
from tests.models.mpt_helpers import tiny_config, tiny_model

NAME = "tiny-mpt"
PAD = 1  # the fixture tokenizer's pad id


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> ServedModel:
    """A tiny MPT (context 256, room for a chat prompt) exported and loaded for serving."""
    model = tiny_model(tiny_config(vocab_size=len(tokenizer), d_model=64, max_seq_len=256))
    folder = save_mpt_as_hf(model, tokenizer, tmp_path_factory.mktemp("api") / NAME, "fp32")
    return load_served_model(ServeConfig(str(folder), trust_remote_code=True, device="cpu"))


@pytest.fixture(scope="module")
def server(served: ServedModel) -> Iterator[RunningServer]:
    folder = str(served.model.name_or_path)
    config = ServeConfig(folder, port=0, trust_remote_code=True, device="cpu", access_log=False)
    running = start_server(config, served)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def base_url(server: RunningServer) -> str:
    return server.url + "/v1"


@pytest.fixture(scope="module")
def causal(base_url: str, tokenizer: PreTrainedTokenizerBase) -> OpenAICausalLMEvalWrapper:
    return OpenAICausalLMEvalWrapper(tokenizer, base_url=base_url, logprobs=10, max_retries=0)


@pytest.fixture(scope="module")
def chat(base_url: str, tokenizer: PreTrainedTokenizerBase) -> OpenAIChatAPIEvalWrapper:
    return OpenAIChatAPIEvalWrapper(tokenizer, base_url=base_url, max_retries=0)


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def _text(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    return str(tokenizer.decode(list(ids)))


@torch.no_grad()
def _log_probs(served: ServedModel, ids: Sequence[int]) -> torch.Tensor:
    """``(len(ids), vocab)``: the local model's next-token log-probabilities at each position."""
    logits = cast(Any, served.model)(input_ids=torch.tensor([list(ids)])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


@torch.no_grad()
def _local_logits(served: ServedModel, batch: dict[str, Any]) -> torch.Tensor:
    return cast(Any, served.model)(input_ids=batch["input_ids"]).logits.float()


def _greedy(served: ServedModel, ids: list[int], new_tokens: int) -> list[int]:
    with torch.no_grad():
        out = cast(Any, served.model).generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=PAD,
            eos_token_id=0,
        )
    return out[0, len(ids) :].tolist()


def icl_batch(
    rows: Sequence[tuple[list[int], list[int]]],
    groupings: Sequence[tuple[int, int]] | None = None,
    gold: Sequence[int] = (),
) -> dict[str, Any]:
    """A right-padded log-likelihood batch as the ICL datasets build it."""
    length = max(len(c) + len(t) for c, t in rows)
    input_ids = torch.full((len(rows), length), PAD)
    indices = []
    for row, (context, continuation) in enumerate(rows):
        sequence = context + continuation
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        indices.append(torch.arange(len(context), len(sequence)))
    return {
        "mode": "icl_task",
        "input_ids": input_ids,
        "attention_mask": input_ids != PAD,
        "labels": input_ids.clone(),
        "continuation_indices": indices,
        "choice_groupings": list(groupings or [(i, i + 1) for i in range(len(rows))]),
        "gold_indices": list(gold or [0] * len(rows)),
    }


def _shifted(batch: dict[str, Any]) -> torch.Tensor:
    labels = batch["labels"].clone()
    labels[:, :-1] = labels[:, 1:].clone()
    labels[:, -1] = -100
    return labels


def _metric_value(metric: Any, batch: dict[str, Any], outputs: Any, labels: Any) -> float:
    metric.update(batch, outputs, labels)
    return float(metric.compute())


def test_endpoint_logprobs_are_the_models(
    base_url: str, served: ServedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    prompt = "x = 1\ny ="
    body = {"model": NAME, "prompt": prompt, "max_tokens": 3, "temperature": 0, "logprobs": 4}
    echoed = httpx.post(f"{base_url}/completions", json={**body, "echo": True}, timeout=60)
    plain = httpx.post(f"{base_url}/completions", json=body, timeout=60)
    assert echoed.status_code == plain.status_code == 200, echoed.text
    choice = echoed.json()["choices"][0]
    prompt_ids = _ids(tokenizer, prompt)
    ids = prompt_ids + _greedy(served, prompt_ids, 3)
    assert choice["text"] == prompt + _text(tokenizer, ids[len(prompt_ids) :])
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == [_text(tokenizer, [i]) for i in ids]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    expected = _log_probs(served, ids)
    for position in range(1, len(ids)):
        scores = expected[position - 1]
        assert logprobs["token_logprobs"][position] == pytest.approx(
            float(scores[ids[position]]), abs=1e-4
        )
        values, top = scores.topk(4)
        expected_top: dict[str, float] = {}
        for value, index in zip(values.tolist(), top.tolist(), strict=True):
            # Ids that decode alike (parts of one UTF-8 character) share a key: the likeliest.
            expected_top.setdefault(_text(tokenizer, [index]), value)
        listed = logprobs["top_logprobs"][position]
        assert list(listed) == list(expected_top)
        assert list(listed.values()) == pytest.approx(list(expected_top.values()), abs=1e-4)
    offsets = logprobs["text_offset"]
    assert offsets == [sum(len(t) for t in logprobs["tokens"][:i]) for i in range(len(ids))]
    without_echo = plain.json()["choices"][0]["logprobs"]
    assert without_echo["tokens"] == logprobs["tokens"][len(prompt_ids) :]
    assert without_echo["token_logprobs"] == logprobs["token_logprobs"][len(prompt_ids) :]
    assert without_echo["text_offset"][0] == len(prompt)


def test_causal_wrapper_gives_the_local_log_probs_and_lm_accuracy(
    causal: OpenAICausalLMEvalWrapper, served: ServedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    right_context = _ids(tokenizer, "x = 1\ny =")
    right = _greedy(served, right_context, 3)  # the model's own continuation: correct
    wrong_context = _ids(tokenizer, "def load(path):\n    return")
    wrong = [*_greedy(served, wrong_context, 1), 466]  # its first token, then another
    batch = icl_batch([(right_context, right), (wrong_context, wrong)])
    outputs = causal.eval_forward(batch)
    local = _local_logits(served, batch)
    for row, positions in enumerate(batch["continuation_indices"]):
        for position in positions.tolist():
            api = torch.log_softmax(outputs[row, position - 1], dim=-1)
            ours = torch.log_softmax(local[row, position - 1], dim=-1)
            listed = ours.topk(10).indices
            single = [i for i in listed.tolist() if _ids(tokenizer, _text(tokenizer, [i])) == [i]]
            torch.testing.assert_close(api[single], ours[single], atol=1e-4, rtol=0)
            assert int(api.argmax()) == int(ours.argmax())
    labels = _shifted(batch)
    assert _metric_value(InContextLearningLMAccuracy(), batch, local, labels) == 0.5
    metric = InContextLearningLMAccuracy()
    causal.update_metric(batch, outputs, metric)
    assert float(metric.compute()) == 0.5


def test_causal_wrapper_scores_multiple_choice_like_the_local_model(
    causal: OpenAICausalLMEvalWrapper, served: ServedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    first, second = _ids(tokenizer, "def load(path):\n    return"), _ids(tokenizer, "x = 1\ny =")
    # Single-token choices among the model's ten likeliest: " s" < " object"; "j" > "ma".
    rows = [(first, [285]), (first, [466]), (second, [75]), (second, [487])]
    batch = icl_batch(rows, groupings=[(0, 2), (2, 4)], gold=[0, 0])
    outputs = causal.eval_forward(batch)
    local = _local_logits(served, batch)
    labels = _shifted(batch)
    api_scores = continuation_log_likelihoods(outputs, labels, batch["continuation_indices"])
    local_scores = continuation_log_likelihoods(local, labels, batch["continuation_indices"])
    torch.testing.assert_close(torch.cat(api_scores), torch.cat(local_scores), atol=1e-4, rtol=0)
    expected = _metric_value(InContextLearningMultipleChoiceAccuracy(), batch, local, labels)
    metric = InContextLearningMultipleChoiceAccuracy()
    causal.update_metric(batch, outputs, metric)
    assert float(metric.compute()) == expected == 0.5


def _local_chat_reply(served: ServedModel, prompt: str, new_tokens: int) -> list[int]:
    messages = [
        {"role": "system", "content": DEFAULT_SYSTEM_ROLE_PROMPT},
        {"role": "user", "content": prompt},
    ]
    return _greedy(
        served, _ids(served.tokenizer, render_chat(served.tokenizer, messages)), new_tokens
    )


def test_chat_wrapper_counts_a_reply_that_spells_the_continuation(
    chat: OpenAIChatAPIEvalWrapper, served: ServedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    right_prompt, wrong_prompt = "x = 1\ny =", "class Parser(object):\n    def"
    right = _local_chat_reply(served, right_prompt, 3)
    wrong = [*_local_chat_reply(served, wrong_prompt, 1), 81]
    assert _text(tokenizer, right) == _text(tokenizer, right).strip()
    batch = icl_batch(
        [(_ids(tokenizer, right_prompt), right), (_ids(tokenizer, wrong_prompt), wrong)]
    )
    outputs = chat.eval_forward(batch)
    for row, (replied, length) in enumerate(
        [(right, 3), (_local_chat_reply(served, wrong_prompt, 2), 2)]
    ):
        start = int(batch["continuation_indices"][row][0])
        assert outputs[row, start - 1 : start - 1 + length].argmax(dim=-1).tolist() == replied
    metric = InContextLearningLMAccuracy()
    chat.update_metric(batch, outputs, metric)
    assert float(metric.compute()) == 0.5


def test_generation_batches_get_the_models_greedy_text(
    causal: OpenAICausalLMEvalWrapper,
    chat: OpenAIChatAPIEvalWrapper,
    served: ServedModel,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    prompts = ["x = 1\ny =", "import os"]
    encoded = [_ids(tokenizer, p) for p in prompts]
    length = max(len(e) for e in encoded)
    input_ids = torch.tensor([[PAD] * (length - len(e)) + e for e in encoded])
    batch = {
        "mode": "generate",
        "input_ids": input_ids,
        "attention_mask": input_ids != PAD,
        "labels": [["j"], ["nothing"]],
        "generation_kwargs": {"max_new_tokens": 4},
        "early_stopping_criteria": [],
    }
    completions = causal.eval_forward(batch)
    assert completions == [_text(tokenizer, _greedy(served, e, 4)) for e in encoded]
    replies = chat.eval_forward(batch)
    assert replies == [_text(tokenizer, _local_chat_reply(served, p, 4)) for p in prompts]
    metric = ICL_METRICS["InContextLearningGenerationExactMatchAccuracy"]()
    causal.update_metric(batch, completions, metric)
    assert float(metric.compute()) == 0.5  # "j exv(" starts with the answer "j"


@pytest.mark.slow
def test_icl_task_evaluated_through_the_endpoint_equals_the_local_model(
    base_url: str, served: ServedModel, tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    # The task gives continuations a leading space: this context's greedy text has one.
    context = "class TextW"
    greedy = _text(tokenizer, _greedy(served, _ids(tokenizer, context), 2))
    assert greedy.startswith(" ")
    rows = [
        {"context": context, "continuation": greedy},
        {"context": "def load(path):\n    return", "continuation": " object"},
    ]
    task = lm_task(write_jsonl(tmp_path / "lm.jsonl", rows), num_fewshot=[0])
    api_model = build_composer_model_from_section(
        {"name": "openai_causal_lm", "base_url": base_url, "max_retries": 0}, tokenizer
    )
    local_model = HuggingFaceModel(
        served.model,
        cast(Any, tokenizer),
        use_logits=True,
        eval_metrics=[cls() for cls in ICL_METRICS.values()],
    )
    key = "metrics/lm/0-shot/InContextLearningLMAccuracy"
    api = run_eval(cast(Any, api_model), icl_evaluators([task], tokenizer))
    local = run_eval(local_model, icl_evaluators([task], tokenizer))
    assert api[key] == local[key] == 0.5


def test_settings_errors_name_the_key(
    base_url: str, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="no OpenAI API key: set the OPENAI_API_KEY"):
        build_composer_model_from_section({"name": "openai_chat", "version": "gpt-4o"}, tokenizer)
    with pytest.raises(ConfigError, match=r"model\.base_ur is not a valid key; did you mean"):
        build_composer_model_from_section(
            {"name": "openai_causal_lm", "base_ur": base_url}, tokenizer
        )
    wrong = OpenAICausalLMEvalWrapper(tokenizer, version="gpt-x", base_url=base_url, max_retries=0)
    with pytest.raises(
        UserError, match=r"/completions: HTTP 404: The model 'gpt-x' does not exist"
    ):
        wrong.next_token_logprobs("x")


def test_api_key_is_sent_and_failures_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if len(seen) < 3:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return httpx.Response(200, json={"ok": True})

    client = OpenAIClient(max_retries=2, backoff_s=0.0, transport=httpx.MockTransport(answer))
    assert client.base_url == "https://api.openai.com/v1"
    assert client.post("/completions", {}) == {"ok": True}
    assert seen == ["Bearer sk-test"] * 3
    seen.clear()
    failing = OpenAIClient(max_retries=1, backoff_s=0.0, transport=httpx.MockTransport(answer))
    with pytest.raises(UserError, match=r"no answer after 2 attempts \(HTTP 503: busy\)"):
        failing.post("/completions", {})
