"""Evaluate a model behind an OpenAI-compatible API on the ICL tasks (``model: {name:
openai_causal_lm | openai_chat, version: <the API's model>, base_url: ...}``).

Both wrappers score the ICL batches built by :mod:`llmfoundry.eval` with the usual metrics:

* ``openai_causal_lm`` (the completions API): for a log-likelihood task (``mode: icl_task``)
  each continuation token is scored by asking for one greedy token after the text before it
  with ``logprobs``; the listed log-probabilities fill that position of the outputs, and the
  probability left over is spread evenly over the other tokens, so ``log_softmax`` of the
  outputs gives back the API's log-probabilities (exact for every listed token; the argmax is
  the API's most likely token). A generation task (``mode: generate``) asks for a greedy
  completion of each prompt.
* ``openai_chat`` (the chat API, which has no log-probabilities of given text): the prompt
  goes as a user message after a system message (``system_role_prompt``), and the reply, as
  tokens, becomes one-hot outputs: a log-likelihood task counts as answered when the reply
  spells the continuation (without its leading whitespace, which chat replies never start
  with); a generation task scores the reply's text.

Positions the metrics do not read are left at zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from composer.models import ComposerModel
from torchmetrics import Metric
from transformers import PreTrainedTokenizerBase

from llmfoundry.eval.metrics import ICL_METRICS, InContextLearningMetric
from llmfoundry.models.inference_api.client import OpenAIClient
from llmfoundry.utils.config_checks import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check_arguments,
)
from llmfoundry.utils.constants import IGNORE_INDEX
from llmfoundry.utils.exceptions import ConfigError, UserError

DEFAULT_LOGPROBS = 5
DEFAULT_SYSTEM_ROLE_PROMPT = "Please complete the following text: "
# OpenAI takes at most four stop strings.
MAX_STOP_STRINGS = 4


def _shifted_labels(batch: Mapping[str, Any]) -> torch.Tensor:
    """The batch's labels moved left by one (position t holds the token at t + 1)."""
    labels = cast(torch.Tensor, batch["labels"]).clone()
    labels[:, :-1] = labels[:, 1:].clone()
    labels[:, -1] = IGNORE_INDEX
    return labels


class InferenceAPIEvalWrapper(ComposerModel):
    """A Composer model that answers ICL batches through an OpenAI-compatible API.

    Subclasses implement :meth:`score_rows` (log-likelihood batches) and :meth:`complete`
    (generation batches).

    Args:
        tokenizer: the tokenizer the ICL data was built with (the served model's).
        version: the API's model name; default: the first one ``{base_url}/models`` lists.
        base_url: the API root with ``/v1`` (default: OpenAI's, which needs
            ``OPENAI_API_KEY``).
        timeout: seconds per request.
        max_retries: further attempts after a connection error, 429 or 5xx.
        client: an :class:`OpenAIClient` to use instead of building one (tests).

    Raises:
        ConfigError: without a tokenizer, or without an API key for OpenAI's URL.
        UserError: if ``version`` is not given and the server does not list its models.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        version: str | None = None,
        base_url: str | None = None,
        timeout: PositiveFloat = 120.0,
        max_retries: NonNegativeInt = 10,
        client: OpenAIClient | None = None,
    ) -> None:
        super().__init__()
        if tokenizer is None:
            raise ConfigError(
                "the OpenAI API models need the served model's tokenizer: set tokenizer.name"
            )
        check_arguments(InferenceAPIEvalWrapper, "model.", timeout=timeout, max_retries=max_retries)
        self.tokenizer = tokenizer
        self.client = client or OpenAIClient(base_url, timeout=timeout, max_retries=max_retries)
        self.model_name = version or self._listed_model()
        self.eval_metrics = {name: cls() for name, cls in ICL_METRICS.items()}
        self.labels: torch.Tensor | None = None

    def _listed_model(self) -> str:
        try:
            return str(self.client.get("/models")["data"][0]["id"])
        except (UserError, KeyError, IndexError, TypeError) as err:
            raise UserError(
                f"model.version is not set and {self.client.base_url}/models names no model "
                f"({err}); set model.version to the API's model name"
            ) from err

    # -- Composer ------------------------------------------------------------------------

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        """The ICL metrics (evaluation only: this model does not train)."""
        return {} if is_train else cast(dict[str, Metric], self.eval_metrics)

    def forward(self, batch: Any) -> Any:
        """Not available: the model is only reachable through the API."""
        raise NotImplementedError("an API model can only be evaluated (eval_forward)")

    def loss(self, outputs: Any, batch: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Not available: an API model does not train."""
        raise NotImplementedError("an API model has no training loss")

    def eval_forward(self, batch: Mapping[str, Any], outputs: Any | None = None) -> Any:
        """Generated strings for a ``generate`` batch, else ``(rows, seq, vocab)`` outputs."""
        del outputs
        if batch.get("mode") == "generate":
            return [self.complete(prompt, batch) for prompt in self._prompts(batch)]
        if batch.get("mode") != "icl_task":
            raise ConfigError(
                f"{type(self).__name__} only evaluates ICL tasks (icl_tasks); remove "
                "eval_loader from this run"
            )
        return self.score_rows(batch)

    def update_metric(self, batch: Any, outputs: Any, metric: Metric) -> dict[str, Any]:
        """Update an ICL metric from the outputs (labels shifted as the metrics expect)."""
        if not isinstance(metric, InContextLearningMetric):
            raise ConfigError(
                f"{type(self).__name__} computes only the ICL metrics, not {type(metric).__name__}"
            )
        if batch.get("mode") == "generate":
            metric.update(batch, outputs, batch["labels"])
            return {}
        batch = self.scored_batch(batch)
        self.labels = _shifted_labels(batch)
        metric.update(batch, outputs, self.labels)
        return {}

    # -- what subclasses use -------------------------------------------------------------

    def scored_batch(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """The batch the outputs line up with (the chat wrapper re-tokenizes it)."""
        return batch

    def score_rows(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The outputs of a log-likelihood batch."""
        raise NotImplementedError

    def complete(self, prompt: str, batch: Mapping[str, Any]) -> str:
        """The API's greedy answer to ``prompt`` for a generation batch."""
        raise NotImplementedError

    def _prompts(self, batch: Mapping[str, Any]) -> list[str]:
        """Each row's prompt text (padding left out)."""
        input_ids = cast(torch.Tensor, batch["input_ids"])
        mask = cast(torch.Tensor, batch["attention_mask"]).bool()
        return [
            str(self.tokenizer.decode(row[keep].tolist()))
            for row, keep in zip(input_ids, mask, strict=True)
        ]

    def _generation_settings(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``max_tokens`` and ``stop`` of a generation batch."""
        kwargs = batch.get("generation_kwargs") or {}
        settings: dict[str, Any] = {"max_tokens": int(kwargs.get("max_new_tokens", 64))}
        stops = [s for s in batch.get("early_stopping_criteria") or () if s]
        if stops:
            settings["stop"] = stops[:MAX_STOP_STRINGS]
        return settings

    def _empty_outputs(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows, seq = input_ids.shape
        return torch.zeros(rows, seq, len(self.tokenizer), device=input_ids.device)


def logprob_row(top: Mapping[int, float], vocab_size: int) -> torch.Tensor:
    """A vocabulary-sized row whose ``log_softmax`` is itself: the listed ids' log-probabilities,
    and the remaining probability spread evenly over every other id."""
    listed = {i: lp for i, lp in top.items() if 0 <= i < vocab_size}
    rest = max(1.0 - sum(math.exp(lp) for lp in listed.values()), 1e-12)
    others = vocab_size - len(listed)
    row = torch.full((vocab_size,), math.log(rest / others) if others else -1e4)
    for token_id, logprob in listed.items():
        row[token_id] = logprob
    return row


class OpenAICausalLMEvalWrapper(InferenceAPIEvalWrapper):
    """ICL evaluation through the completions API with ``logprobs`` (``openai_causal_lm``).

    Args:
        tokenizer, version, base_url, timeout, max_retries, client: as
            :class:`InferenceAPIEvalWrapper`.
        logprobs: how many most likely tokens the API lists per position (OpenAI allows 5).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        version: str | None = None,
        base_url: str | None = None,
        logprobs: PositiveInt = DEFAULT_LOGPROBS,
        timeout: PositiveFloat = 120.0,
        max_retries: NonNegativeInt = 10,
        client: OpenAIClient | None = None,
    ) -> None:
        check_arguments(OpenAICausalLMEvalWrapper, "model.", logprobs=logprobs)
        super().__init__(tokenizer, version, base_url, timeout, max_retries, client)
        self.logprobs = logprobs

    def next_token_logprobs(self, prompt: str) -> dict[int, float]:
        """The API's most likely next tokens after ``prompt``, by id, with log-probabilities."""
        answer = self.client.post(
            "/completions",
            {
                "model": self.model_name,
                "prompt": prompt,
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": self.logprobs,
            },
        )
        logprobs = answer["choices"][0].get("logprobs") or {}
        listed: dict[str, float] = dict((logprobs.get("top_logprobs") or [{}])[0] or {})
        tokens, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
        if tokens and values and values[0] is not None:  # the generated token itself
            listed.setdefault(tokens[0], values[0])
        by_id: dict[int, float] = {}
        for text, value in listed.items():
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:  # text that is not exactly one token cannot be placed
                by_id.setdefault(int(ids[0]), float(value))
        return by_id

    def score_rows(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """One request per continuation token: the log-probabilities after the text before it."""
        input_ids = cast(torch.Tensor, batch["input_ids"])
        outputs = self._empty_outputs(input_ids)
        vocab_size = outputs.shape[-1]
        for row, positions in enumerate(batch["continuation_indices"]):
            tokens = input_ids[row].tolist()
            for position in positions.tolist():
                prompt = str(self.tokenizer.decode(tokens[:position]))
                top = self.next_token_logprobs(prompt)
                outputs[row, position - 1] = logprob_row(top, vocab_size)
        return outputs

    def complete(self, prompt: str, batch: Mapping[str, Any]) -> str:
        """A greedy completion of ``prompt``."""
        body = {"model": self.model_name, "prompt": prompt, "temperature": 0}
        answer = self.client.post("/completions", {**body, **self._generation_settings(batch)})
        return str(answer["choices"][0]["text"])


class OpenAIChatAPIEvalWrapper(InferenceAPIEvalWrapper):
    """ICL evaluation through the chat API (``openai_chat``).

    Args:
        tokenizer, version, base_url, timeout, max_retries, client: as
            :class:`InferenceAPIEvalWrapper`.
        system_role_prompt: the system message before each prompt.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        version: str | None = None,
        base_url: str | None = None,
        system_role_prompt: str = DEFAULT_SYSTEM_ROLE_PROMPT,
        timeout: PositiveFloat = 120.0,
        max_retries: NonNegativeInt = 10,
        client: OpenAIClient | None = None,
    ) -> None:
        super().__init__(tokenizer, version, base_url, timeout, max_retries, client)
        self.system_role_prompt = system_role_prompt

    def chat(self, prompt: str, max_tokens: int, stop: Sequence[str] = ()) -> str:
        """The API's greedy reply to ``prompt`` after the system message."""
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [
                {"role": "system", "content": self.system_role_prompt},
                {"role": "user", "content": prompt},
            ],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if stop:
            body["stop"] = list(stop)
        answer = self.client.post("/chat/completions", body)
        return str(answer["choices"][0]["message"]["content"] or "")

    def scored_batch(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """The batch with each continuation re-tokenized without its leading whitespace."""
        input_ids = cast(torch.Tensor, batch["input_ids"])
        length = input_ids.shape[1]
        rows, indices = [], []
        for row, positions in enumerate(batch["continuation_indices"]):
            tokens = input_ids[row].tolist()
            start, end = int(positions[0]), int(positions[-1]) + 1
            text = str(self.tokenizer.decode(tokens[start:end])).strip()
            continuation = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            ids = (tokens[:start] + continuation)[-length:]
            start = len(ids) - len(continuation)
            rows.append(ids + [tokens[-1]] * (length - len(ids)))
            indices.append(torch.arange(start, start + len(continuation)))
        retokenized = torch.tensor(rows, dtype=input_ids.dtype, device=input_ids.device)
        return {
            **batch,
            "input_ids": retokenized,
            "labels": retokenized.clone(),
            "continuation_indices": indices,
        }

    def score_rows(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """One request per row: the reply's tokens, one-hot, where the continuation's are."""
        scored = self.scored_batch(batch)
        input_ids = cast(torch.Tensor, scored["input_ids"])
        outputs = self._empty_outputs(input_ids)
        for row, positions in enumerate(scored["continuation_indices"]):
            start = int(positions[0])
            prompt = str(self.tokenizer.decode(input_ids[row, :start].tolist()))
            reply = self.chat(prompt, max_tokens=len(positions))
            reply_ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
            for offset, token in enumerate(list(reply_ids)[: len(positions)]):
                outputs[row, start - 1 + offset, int(token)] = 1.0
        return outputs

    def complete(self, prompt: str, batch: Mapping[str, Any]) -> str:
        """The reply to ``prompt``."""
        settings = self._generation_settings(batch)
        return self.chat(prompt, settings["max_tokens"], settings.get("stop", ()))
