"""openai_causal_lm / openai_chat: ICL evaluation through our own OpenAI-compatible endpoint
(a tiny MPT served on loopback) gives the local model's log-probabilities, answers and metric
values; the endpoint's ``logprobs`` are the model's."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import torch
from composer.models import HuggingFaceModel
from transformers import PreTrainedTokenizerBase

from llmfoundry.eval.metrics import (
    ICL_METRICS,
    InContextLearningLMAccuracy,
    InContextLearningMultipleChoiceAccuracy,
    continuation_log_likelihoods,
)
from llmfoundry.inference.chat_template import render_chat
from llmfoundry.inference.options import ModelSource
from llmfoundry.inference.serve import (
    RunningServer,
    ServeConfig,
    ServedModel,
    load_served_model,
    start_server,
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
from tests.eval.helpers import exact_match, icl_evaluators, lm_task, run_eval, write_jsonl
from tests.fixtures import tiny_config, tiny_model

NAME = "tiny-mpt"
PAD = 1  # the fixture tokenizer's pad id
LISTED = 10  # how many likeliest tokens the causal wrapper has the endpoint list


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> ServedModel:
    """A tiny MPT (context 256, room for a chat prompt) exported and loaded for serving."""
    model = tiny_model(tiny_config(vocab_size=len(tokenizer), d_model=64, max_seq_len=256))
    folder = save_mpt_as_hf(model, tokenizer, tmp_path_factory.mktemp("api") / NAME, "fp32")
    return load_served_model(ModelSource(str(folder), trust_remote_code=True, device="cpu"))


@pytest.fixture(scope="module")
def server(served: ServedModel) -> Iterator[RunningServer]:
    folder = str(served.model.name_or_path)
    source = ModelSource(folder, trust_remote_code=True, device="cpu")
    config = ServeConfig(source, port=0, access_log=False)
    running = start_server(config, served)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def base_url(server: RunningServer) -> str:
    return server.url + "/v1"


@pytest.fixture(scope="module")
def prompts(corpus_texts: list[str]) -> list[str]:
    """Candidate contexts: the corpus's distinct lines of 8 to 40 characters, stripped."""
    lines = (line.strip() for text in corpus_texts for line in text.splitlines())
    return list(dict.fromkeys(line for line in lines if 8 <= len(line) <= 40))


@pytest.fixture(scope="module")
def causal(base_url: str, tokenizer: PreTrainedTokenizerBase) -> OpenAICausalLMEvalWrapper:
    return OpenAICausalLMEvalWrapper(tokenizer, base_url=base_url, logprobs=LISTED, max_retries=0)


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


# The rows below are picked from the model at hand (a random one): the endpoint gets text and
# names tokens by their text, so a row it can score token for token has ids that its text
# tokenizes back to, and continuation tokens that each tokenize back from their own text.


def _one_token(tokenizer: PreTrainedTokenizerBase, token: int) -> bool:
    """Whether the endpoint can name ``token``: its text is exactly that token (not, say, part of
    a UTF-8 character, which decodes to U+FFFD)."""
    return _ids(tokenizer, _text(tokenizer, [token])) == [token]


def _round_trips(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> bool:
    """Whether ``ids`` has no special token and each of its prefixes tokenizes back from its text
    (what the endpoint sees is what the local model scores)."""
    ids = list(ids)
    return not set(tokenizer.all_special_ids) & set(ids) and all(
        _ids(tokenizer, _text(tokenizer, ids[:end])) == ids[:end] for end in range(1, len(ids) + 1)
    )


def _first(prompts: Sequence[str], count: int, fits: Callable[[str], bool]) -> list[str]:
    """The first ``count`` prompts that fit."""
    found: list[str] = []
    for prompt in prompts:
        if fits(prompt):
            found.append(prompt)
            if len(found) == count:
                return found
    raise AssertionError(f"only {len(found)} of {len(prompts)} prompts fit, {count} needed")


def _scorable(
    served: ServedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, new_tokens: int
) -> bool:
    """Whether the endpoint can score ``prompt``'s greedy continuation token for token."""
    ids = _ids(tokenizer, prompt)
    greedy = _greedy(served, ids, new_tokens)
    return (
        len(greedy) == new_tokens
        and all(_one_token(tokenizer, token) for token in greedy)
        and _round_trips(tokenizer, ids + greedy)
    )


def _ranked(served: ServedModel, ids: Sequence[int]) -> list[int]:
    """Every token id, the local model's likeliest next token after ``ids`` first."""
    return _log_probs(served, ids)[-1].argsort(descending=True).tolist()


def _wrong_turn(
    served: ServedModel, ids: list[int], greedy: list[int], fits: Callable[[list[int]], bool]
) -> list[int]:
    """``greedy[0]``, then the likeliest token other than ``greedy[1]`` that ``fits``."""
    for token in _ranked(served, ids + greedy[:1]):
        if token != greedy[1] and fits([greedy[0], token]):
            return [greedy[0], token]
    raise AssertionError(f"no second token fits after {greedy[0]}")


def _listed_one_tokens(
    served: ServedModel, tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]
) -> list[int]:
    """The tokens among the local model's ``LISTED`` likeliest after ``ids`` that the endpoint
    names, likeliest first."""
    return [t for t in _ranked(served, ids)[:LISTED] if _one_token(tokenizer, t)]


def test_causal_wrapper_gives_the_local_log_probs_and_lm_accuracy(
    causal: OpenAICausalLMEvalWrapper,
    served: ServedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
) -> None:
    picked = _first(prompts, 2, lambda p: _scorable(served, tokenizer, p, 3))
    right_context, wrong_context = (_ids(tokenizer, p) for p in picked)
    right = _greedy(served, right_context, 3)  # the model's own continuation: correct
    greedy = _greedy(served, wrong_context, 2)
    wrong = _wrong_turn(served, wrong_context, greedy, lambda _: True)  # its first, another
    batch = icl_batch([(right_context, right), (wrong_context, wrong)])
    outputs = causal.eval_forward(batch)
    local = _local_logits(served, batch)
    for row, positions in enumerate(batch["continuation_indices"]):
        for position in positions.tolist():
            api = torch.log_softmax(outputs[row, position - 1], dim=-1)
            ours = torch.log_softmax(local[row, position - 1], dim=-1)
            listed = ours.topk(LISTED).indices
            single = [i for i in listed.tolist() if _one_token(tokenizer, i)]
            torch.testing.assert_close(api[single], ours[single], atol=1e-4, rtol=0)
            assert int(api.argmax()) == int(ours.argmax())
    labels = _shifted(batch)
    assert _metric_value(InContextLearningLMAccuracy(), batch, local, labels) == 0.5
    metric = InContextLearningLMAccuracy()
    causal.update_metric(batch, outputs, metric)
    assert float(metric.compute()) == 0.5


def test_causal_wrapper_scores_multiple_choice_like_the_local_model(
    causal: OpenAICausalLMEvalWrapper,
    served: ServedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
) -> None:
    def fits(prompt: str) -> bool:
        ids = _ids(tokenizer, prompt)
        return _round_trips(tokenizer, ids) and len(_listed_one_tokens(served, tokenizer, ids)) > 1

    first, second = (_ids(tokenizer, p) for p in _first(prompts, 2, fits))
    # Single-token choices among the model's ten likeliest: the gold one is the less likely
    # after the first context (wrong), the likelier after the second (right).
    likeliest, runner_up = _listed_one_tokens(served, tokenizer, first)[:2]
    rows = [(first, [runner_up]), (first, [likeliest])]
    likeliest, runner_up = _listed_one_tokens(served, tokenizer, second)[:2]
    rows += [(second, [likeliest]), (second, [runner_up])]
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


def _chat_ids(served: ServedModel, prompt: str) -> list[int]:
    """The rendered chat the chat wrapper sends: its system message, then ``prompt``."""
    messages = [
        {"role": "system", "content": DEFAULT_SYSTEM_ROLE_PROMPT},
        {"role": "user", "content": prompt},
    ]
    return _ids(served.tokenizer, render_chat(served.tokenizer, messages))


def _local_chat_reply(served: ServedModel, prompt: str, new_tokens: int) -> list[int]:
    return _greedy(served, _chat_ids(served, prompt), new_tokens)


def _spelled(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> bool:
    """Whether ``ids`` round-trip and their text has no surrounding whitespace (a chat reply
    that spells it counts as the continuation)."""
    text = _text(tokenizer, ids)
    return _round_trips(tokenizer, ids) and text == text.strip()


def test_chat_wrapper_counts_a_reply_that_spells_the_continuation(
    chat: OpenAIChatAPIEvalWrapper,
    served: ServedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
) -> None:
    def fits(prompt: str) -> bool:
        reply = _local_chat_reply(served, prompt, 3)
        return (
            _round_trips(tokenizer, _ids(tokenizer, prompt))
            and len(reply) == 3
            and _spelled(tokenizer, reply[:2])
            and _spelled(tokenizer, reply)
        )

    right_prompt, wrong_prompt = _first(prompts, 2, fits)
    right = _local_chat_reply(served, right_prompt, 3)
    greedy = _local_chat_reply(served, wrong_prompt, 2)
    wrong_chat = _chat_ids(served, wrong_prompt)
    wrong = _wrong_turn(served, wrong_chat, greedy, lambda ids: _spelled(tokenizer, ids))
    assert _text(tokenizer, right) == _text(tokenizer, right).strip()
    batch = icl_batch(
        [(_ids(tokenizer, right_prompt), right), (_ids(tokenizer, wrong_prompt), wrong)]
    )
    outputs = chat.eval_forward(batch)
    for row, (replied, length) in enumerate([(right, 3), (greedy, 2)]):
        start = int(batch["continuation_indices"][row][0])
        assert outputs[row, start - 1 : start - 1 + length].argmax(dim=-1).tolist() == replied
    metric = InContextLearningLMAccuracy()
    chat.update_metric(batch, outputs, metric)
    assert float(metric.compute()) == 0.5


def _generated(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """Generated tokens' text as the endpoint answers it (special tokens dropped)."""
    return str(tokenizer.decode(list(ids), skip_special_tokens=True))


def test_generation_batches_get_the_models_greedy_text(
    causal: OpenAICausalLMEvalWrapper,
    chat: OpenAIChatAPIEvalWrapper,
    served: ServedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
) -> None:
    texts = _first(prompts, 2, lambda p: _round_trips(tokenizer, _ids(tokenizer, p)))
    encoded = [_ids(tokenizer, p) for p in texts]
    length = max(len(e) for e in encoded)
    input_ids = torch.tensor([[PAD] * (length - len(e)) + e for e in encoded])
    expected = [_generated(tokenizer, _greedy(served, e, 4)) for e in encoded]
    # The first row's answer is its greedy text; nothing the second row generates starts with
    # its answer, which is longer.
    labels = [[expected[0]], [expected[1] + " nothing"]]
    batch = {
        "mode": "generate",
        "input_ids": input_ids,
        "attention_mask": input_ids != PAD,
        "labels": labels,
        "generation_kwargs": {"max_new_tokens": 4},
        "early_stopping_criteria": [],
    }
    completions = causal.eval_forward(batch)
    assert completions == expected
    replies = chat.eval_forward(batch)
    assert replies == [_generated(tokenizer, _local_chat_reply(served, p, 4)) for p in texts]
    metric = ICL_METRICS["InContextLearningGenerationExactMatchAccuracy"]()
    causal.update_metric(batch, completions, metric)
    matches = [exact_match(text, answers) for text, answers in zip(expected, labels, strict=True)]
    assert float(metric.compute()) == sum(matches) / len(matches) == 0.5


@pytest.mark.slow
def test_icl_task_evaluated_through_the_endpoint_equals_the_local_model(
    base_url: str,
    served: ServedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    tmp_path: Path,
) -> None:
    def spaced(ids: list[int]) -> bool:  # the task gives continuations one leading space
        text = _text(tokenizer, ids)
        return _round_trips(tokenizer, ids) and text == " " + text.strip()

    def fits(prompt: str) -> bool:
        ids = _ids(tokenizer, prompt)
        return _scorable(served, tokenizer, prompt, 2) and spaced(_greedy(served, ids, 2))

    right, wrong = _first(prompts, 2, fits)
    greedy = _greedy(served, _ids(tokenizer, wrong), 2)
    other = _wrong_turn(served, _ids(tokenizer, wrong), greedy, spaced)
    rows = [
        {
            "context": right,
            "continuation": _text(tokenizer, _greedy(served, _ids(tokenizer, right), 2)),
        },
        {"context": wrong, "continuation": _text(tokenizer, other)},
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
    with pytest.raises(ConfigError, match=r"^model\.logprobs must be a positive int, got int 0$"):
        build_composer_model_from_section(
            {"name": "openai_causal_lm", "base_url": base_url, "logprobs": 0}, tokenizer
        )
    with pytest.raises(ConfigError, match=r"^model\.timeout must be a positive float, got int 0$"):
        build_composer_model_from_section(
            {"name": "openai_chat", "base_url": base_url, "timeout": 0}, tokenizer
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
