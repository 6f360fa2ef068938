"""Send a file of prompts to an OpenAI-compatible endpoint: the logic of ``endpoint_generate.py``.

Prompts come from a text file (one per line) or a JSONL file (``.jsonl``/``.json``: one object
per line with a ``prompt`` field). They are sent concurrently (``parallel`` at a time) to
``/v1/completions`` or ``/v1/chat/completions`` (a prompt becomes one user message). A
connection error, a timeout, 429 or a 5xx answer is retried with exponential backoff; other
errors are recorded for their prompt. Results are written, in input order, as JSONL:
``{"prompt", "text", "finish_reason", "latency_s", "error"}`` (``error`` null on success;
``latency_s`` from the first attempt to the final answer, retries included).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llmfoundry.utils.config_checks import NonNegativeInt, PositiveInt, check_arguments
from llmfoundry.utils.exceptions import (
    ConfigError,
    DatasetError,
    MissingDependencyError,
    MissingFileError,
)
from llmfoundry.utils.file_utils import atomic_write_text
from llmfoundry.utils.http_client import RetryPolicy, error_message, post_with_retries

try:
    import httpx
except ImportError as err:  # httpx comes with the serve extra (gradio needs it too)
    raise MissingDependencyError(
        "endpoint_generate needs httpx: pip install 'llm-foundry[serve]' (or pip install httpx)"
    ) from err

logger = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".json")
RETRIED_STATUSES = frozenset({408, 429})


@dataclass
class EndpointResult:
    """The answer to one prompt.

    Attributes:
        prompt: the prompt as read.
        text: the completion (None if the request failed).
        finish_reason: ``stop`` or ``length`` (None if the request failed).
        latency_s: seconds from the first attempt to the final answer.
        error: why the request failed, or None.
    """

    prompt: str
    text: str | None
    finish_reason: str | None
    latency_s: float
    error: str | None = None


@dataclass
class EndpointSummary:
    """What a run of :func:`generate_from_endpoint` did.

    Attributes:
        results: one per prompt, in input order.
        output: the file written (for LLM Foundry's CSV form, an object-store URI).
        elapsed_s: wall time of the whole run.
    """

    results: list[EndpointResult]
    output: Path | str
    elapsed_s: float

    @property
    def failed(self) -> int:
        """How many prompts got no completion."""
        return sum(result.error is not None for result in self.results)

    def line(self) -> str:
        """A one-line summary."""
        latencies = [r.latency_s for r in self.results if r.error is None]
        mean = sum(latencies) / len(latencies) if latencies else 0.0
        top = max(latencies, default=0.0)
        ok = len(self.results) - self.failed
        return (
            f"{len(self.results)} prompts: {ok} ok, {self.failed} failed; latency mean "
            f"{mean:.3f}s, max {top:.3f}s; {self.elapsed_s:.1f}s in all; results in {self.output}"
        )


def read_prompts_file(path: str | Path) -> list[str]:
    """Prompts from a text file (one per line, blank lines skipped) or a JSONL file.

    A ``.jsonl``/``.json`` file holds one JSON object per line with a string ``prompt``.

    Raises:
        MissingFileError: if the file does not exist.
        DatasetError: for a JSONL line that is not an object with a ``prompt``, or no prompts.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"prompts file '{path}' does not exist")
    prompts: list[str] = []
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if not jsonl:
            prompts.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise DatasetError(
                f"{path}:{number}: each line must be an object with a string 'prompt'"
            )
        prompts.append(record["prompt"])
    if not prompts:
        raise DatasetError(f"prompts file '{path}' holds no prompts")
    return prompts


def resolve_endpoint(endpoint: str, chat: bool = False) -> tuple[str, bool]:
    """The URL to post to and whether it is the chat API.

    ``endpoint`` is either the full URL of ``.../completions`` or ``.../chat/completions``, or
    the server's base URL (``http://host:port`` or ``http://host:port/v1``), to which the
    completions path (the chat one with ``chat``) is added.

    Raises:
        ConfigError: if ``endpoint`` is not an http(s) URL, or names completions with ``chat``.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--endpoint={endpoint!r} must be an http(s) URL")
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        return endpoint, True
    if path.endswith("/completions"):
        if chat:
            raise ConfigError(
                f"--endpoint={endpoint!r} is the completions API; drop --chat or use "
                ".../chat/completions"
            )
        return endpoint, False
    if not path.endswith("/v1"):
        path += "/v1"
    path += "/chat/completions" if chat else "/completions"
    return urlunsplit(parts._replace(path=path)), chat


def _api_base(url: str) -> str:
    """``http://host:port/v1`` of a completions URL."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        path = path.removesuffix(suffix)
    return urlunsplit(parts._replace(path=path))


@dataclass
class RequestSettings:
    """What every request of a run carries and how it is sent.

    Attributes:
        url: the URL posted to.
        chat: the chat API (one prompt a request, as one user message).
        fields: the request's other fields (``model``, ``max_tokens``, ``temperature``, ...).
        retry: when a failed request is tried again.
        min_interval_s: the least time between the starts of two requests (a rate limit).
    """

    url: str
    chat: bool
    fields: dict[str, Any]
    retry: RetryPolicy
    min_interval_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _next_start: float = field(default=0.0, init=False, repr=False)

    def wait_for_turn(self) -> None:
        """Sleep until the rate limit lets the next request start."""
        if self.min_interval_s <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.min_interval_s
        time.sleep(start - now)


def _request_body(settings: RequestSettings, prompts: Sequence[str]) -> dict[str, Any]:
    body = dict(settings.fields)
    if settings.chat:
        body["messages"] = [{"role": "user", "content": prompts[0]}]
    else:
        body["prompt"] = prompts[0] if len(prompts) == 1 else list(prompts)
    return body


def send_batch(
    client: httpx.Client, settings: RequestSettings, prompts: Sequence[str]
) -> list[EndpointResult]:
    """One request for ``prompts`` (a list prompt when there are several), with retries; a
    failure becomes every prompt's ``error``."""
    settings.wait_for_turn()
    start = time.perf_counter()
    label = f"prompt {prompts[0][:40]!r}" + (f" (+{len(prompts) - 1})" if len(prompts) > 1 else "")
    outcome = post_with_retries(
        client, settings.url, _request_body(settings, prompts), settings.retry, label
    )
    latency = time.perf_counter() - start
    response = outcome.response
    if response is None:
        error = f"{outcome.last_error} (after {settings.retry.retries + 1} attempts)"
    elif response.status_code != 200:
        error = error_message(response, settings.retry.message_chars)
    else:
        choices = response.json()["choices"]
        by_index = {int(c.get("index", i)): c for i, c in enumerate(choices)}
        return [
            _result(prompt, by_index.get(i), settings.chat, latency)
            for i, prompt in enumerate(prompts)
        ]
    return [EndpointResult(prompt, None, None, latency, error) for prompt in prompts]


def _result(
    prompt: str, choice: dict[str, Any] | None, chat: bool, latency: float
) -> EndpointResult:
    """The prompt's answer from its ``choice`` (None: the answer had none for it)."""
    if choice is None:
        return EndpointResult(prompt, None, None, latency, "the answer holds no choice for it")
    text = choice["message"]["content"] if chat else choice["text"]
    return EndpointResult(prompt, text, choice["finish_reason"], latency)


def served_model_name(client: httpx.Client, url: str) -> str:
    """The first model the endpoint lists at ``/v1/models``.

    Raises:
        ConfigError: if the listing cannot be read (pass ``--model`` instead).
    """
    models_url = _api_base(url) + "/models"
    try:
        response = client.get(models_url)
        response.raise_for_status()
        return str(response.json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
        raise ConfigError(
            f"could not read the served model from {models_url} ({err}); pass --model"
        ) from err


def query_endpoint(
    prompts: Sequence[str],
    endpoint: str,
    model: str | None = None,
    chat: bool = False,
    max_tokens: PositiveInt = 64,
    temperature: float = 0.0,
    parallel: PositiveInt = 4,
    retries: NonNegativeInt = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 300.0,
    api_key: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> list[EndpointResult]:
    """Send every prompt to the endpoint, ``parallel`` at a time.

    Args:
        prompts: the prompts.
        endpoint: completions URL or server base URL (see :func:`resolve_endpoint`).
        model: the model name to request; default the first one the server lists.
        chat: use the chat API (each prompt as one user message).
        max_tokens: tokens to generate per prompt.
        temperature: sampling temperature (0: greedy).
        parallel: requests in flight at once.
        retries: extra attempts after a connection error, timeout, 429 or 5xx.
        backoff_s: wait before the first retry; doubled for each further one.
        timeout_s: per-attempt HTTP timeout.
        api_key: sent as a bearer token, if given.
        transport: an httpx transport to use instead of the network (tests).

    Returns:
        One result per prompt, in input order.

    Raises:
        ConfigError: on bad settings or an unreadable model listing.
    """
    check_arguments(query_endpoint, "--", parallel=parallel, max_tokens=max_tokens, retries=retries)
    url, chat = resolve_endpoint(endpoint, chat)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with endpoint_client(parallel, timeout_s, headers, transport) as client:
        settings = RequestSettings(
            url=url,
            chat=chat,
            fields={
                "model": model or served_model_name(client, url),
                "max_tokens": max_tokens,
                "temperature": temperature,
            },
            retry=RetryPolicy(retries, backoff_s, RETRIED_STATUSES),
        )
        return send_in_batches(client, settings, prompts, 1, parallel)


def endpoint_client(
    parallel: int,
    timeout_s: float,
    headers: dict[str, str],
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An HTTP client that keeps ``parallel`` connections."""
    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    return httpx.Client(timeout=timeout_s, headers=headers, limits=limits, transport=transport)


def send_in_batches(
    client: httpx.Client,
    settings: RequestSettings,
    prompts: Sequence[str],
    batch_size: int,
    parallel: int,
) -> list[EndpointResult]:
    """Every prompt, ``batch_size`` a request and ``parallel`` requests at once; one result per
    prompt, in input order."""
    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    with ThreadPoolExecutor(parallel, thread_name_prefix="endpoint") as pool:
        answered = pool.map(lambda batch: send_batch(client, settings, batch), batches)
        return [result for batch in answered for result in batch]


def write_results(results: Sequence[EndpointResult], output: str | Path) -> Path:
    """Write ``results`` as JSONL, atomically (a temporary file renamed into place)."""
    output = Path(output)
    atomic_write_text(
        output, "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in results)
    )
    return output


def generate_from_endpoint(
    prompts_file: str | Path, output: str | Path, endpoint: str, **query: Any
) -> EndpointSummary:
    """Read prompts, query the endpoint, write the results: the whole command.

    Args:
        prompts_file: text (one prompt a line) or JSONL (``prompt`` field) file.
        output: the JSONL file to write.
        endpoint: completions URL or server base URL.
        **query: settings passed to :func:`query_endpoint` (``model``, ``chat``,
            ``max_tokens``, ``temperature``, ``parallel``, ``retries``, ...).

    Returns:
        The summary (results, output path, elapsed time).

    Raises:
        MissingFileError, DatasetError: for a missing or malformed prompts file.
        ConfigError: on bad settings.
    """
    start = time.perf_counter()
    prompts = read_prompts_file(prompts_file)
    logger.info("sending %d prompts to %s", len(prompts), endpoint)
    results = query_endpoint(prompts, endpoint, **query)
    path = write_results(results, output)
    return EndpointSummary(results=results, output=path, elapsed_s=time.perf_counter() - start)
