"""A load test for an OpenAI-compatible endpoint: the logic of ``load_test.py``.

``clients`` threads each send ``/v1/completions`` requests one after another (over one kept-alive
stdlib HTTP connection each) until ``seconds`` have passed; a request in flight then finishes
(each has a timeout). Every answer is tallied by status: 200 is a success, 429 (the server's
queue is full) is counted apart from the failures (any other status, a timeout, a connection
error). Latency percentiles cover the successful requests. With ``server_pid``, the server's
resident memory is read from ``/proc/<pid>/status`` once a second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmfoundry.utils.cli_utils import run_user_command
from llmfoundry.utils.config_checks import PositiveFloat, PositiveInt, check_fields_of
from llmfoundry.utils.exceptions import ConfigError, UserError

__all__ = ["LoadTestConfig", "LoadTestResult", "build_parser", "format_table", "run_load_test"]

OK = "200"
BUSY = "429"
CONNECTION_ERROR_PAUSE_S = 0.1


@dataclass
class LoadTestConfig:
    """What to send, and for how long.

    Attributes:
        url: the endpoint's base URL (``http://host:port``).
        clients: concurrent clients, each sending one request at a time.
        seconds: how long clients start new requests.
        prompt: every request's ``prompt``.
        max_tokens: every request's ``max_tokens`` (greedy decoding).
        model: the ``model`` to ask for; default: the first one ``/v1/models`` lists.
        timeout: seconds one request may take before it counts as a ``timeout`` failure.
        api_key: sent as ``Authorization: Bearer <key>`` (never printed).
        server_pid: the server's process id, to sample its resident memory (Linux).
    """

    url: str
    clients: PositiveInt = 8
    seconds: PositiveFloat = 10.0
    prompt: str = "def "
    max_tokens: PositiveInt = 16
    model: str | None = None
    timeout: PositiveFloat = 60.0
    api_key: str | None = field(default=None, repr=False)
    server_pid: int | None = None

    def __post_init__(self) -> None:
        """Check the numbers and the URL.

        Raises:
            ConfigError: naming the flag whose value cannot work.
        """
        check_fields_of(self, "--", ("clients", "seconds", "max_tokens", "timeout"))
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--url must look like http://host:port, got '{self.url}'")


@dataclass
class LoadTestResult:
    """What a load test measured.

    Attributes:
        clients: concurrent clients.
        seconds: wall time from the first request to the last answer.
        statuses: answers by status (``"200"``, ``"429"``, ``"500"``, ``"timeout"``, ...).
        latencies: seconds each successful request took, sorted.
        rss_mib: the server's resident memory samples in MiB, in order (empty without a pid).
    """

    clients: int
    seconds: float
    statuses: Counter[str]
    latencies: list[float]
    rss_mib: list[float]

    @property
    def requests(self) -> int:
        """Requests answered (or failed) in all."""
        return sum(self.statuses.values())

    @property
    def successes(self) -> int:
        """Requests answered with 200."""
        return self.statuses[OK]

    @property
    def busy(self) -> int:
        """Requests answered with 429 (the server's queue was full)."""
        return self.statuses[BUSY]

    @property
    def failures(self) -> dict[str, int]:
        """Requests that failed, by status (neither 200 nor 429)."""
        return {k: v for k, v in sorted(self.statuses.items()) if k not in (OK, BUSY)}

    def percentile(self, share: float) -> float | None:
        """The nearest-rank latency percentile (``share`` in (0, 1]) of the successes."""
        if not self.latencies:
            return None
        return self.latencies[max(0, math.ceil(share * len(self.latencies)) - 1)]


class _Client:
    """One client: a kept-alive connection and the requests it sent."""

    def __init__(self, config: LoadTestConfig, body: bytes) -> None:
        self.config = config
        self.body = body
        parts = urlsplit(config.url)
        self.host, self.port, self.https = parts.hostname or "", parts.port, parts.scheme == "https"
        self.path = parts.path.rstrip("/") + "/v1/completions"
        self.headers = _headers(config.api_key)
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=self.config.timeout)

    def send_one(self) -> None:
        """Send one request and tally its answer."""
        self.connection = self.connection or self._connect()
        start = time.perf_counter()
        try:
            self.connection.request("POST", self.path, self.body, self.headers)
            response = self.connection.getresponse()
            response.read()
            status = str(response.status)
            if response.getheader("connection", "").lower() == "close":
                self.close()
        except TimeoutError:
            status = "timeout"
            self.close()
        except (OSError, http.client.HTTPException):
            status = "connection error"
            self.close()
            time.sleep(CONNECTION_ERROR_PAUSE_S)  # a refusing server is not retried in a spin
        if status == OK:
            self.latencies.append(time.perf_counter() - start)
        self.statuses[status] += 1

    def run_until(self, end: float) -> None:
        """Send requests one after another until ``end`` (``time.monotonic``)."""
        try:
            while time.monotonic() < end:
                self.send_one()
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection (a new one opens for the next request)."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _served_model(config: LoadTestConfig) -> str:
    """The first model ``GET /v1/models`` lists.

    Raises:
        UserError: if the endpoint cannot be reached or does not answer the listing.
    """
    client = _Client(config, b"")
    connection = client._connect()
    path = urlsplit(config.url).path.rstrip("/") + "/v1/models"
    try:
        connection.request("GET", path, headers=_headers(config.api_key))
        response = connection.getresponse()
        payload: Any = json.loads(response.read() or b"null")
        status = response.status
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise UserError(f"cannot list the models of {config.url} ({err}); is it serving?") from err
    finally:
        connection.close()
    if status != 200 or not isinstance(payload, dict) or not payload.get("data"):
        raise UserError(
            f"GET {config.url}/v1/models answered {status}; pass --model (and --api_key if the "
            "server needs one)"
        )
    return str(payload["data"][0]["id"])


def _rss_mib(pid: int) -> float:
    """The resident memory of process ``pid`` in MiB (``VmRSS`` of ``/proc/<pid>/status``).

    Raises:
        ConfigError: if the process does not exist.
    """
    status = Path(f"/proc/{pid}/status")
    try:
        lines = status.read_text().splitlines()
    except OSError as err:
        raise ConfigError(f"--server_pid {pid}: no such process ({status} is unreadable)") from err
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ConfigError(f"--server_pid {pid}: {status} has no VmRSS line")


def _sample_rss(pid: int, samples: list[float], stop: threading.Event) -> None:
    """Append the RSS of ``pid`` each second until ``stop`` is set (or the process ends)."""
    while not stop.wait(1.0):
        try:
            samples.append(_rss_mib(pid))
        except ConfigError:
            return


def run_load_test(config: LoadTestConfig) -> LoadTestResult:
    """Drive the endpoint with ``config.clients`` clients for ``config.seconds`` seconds.

    Raises:
        UserError: if the endpoint cannot be reached, or ``server_pid`` names no process.
    """
    model = config.model or _served_model(config)
    body = {
        "model": model,
        "prompt": config.prompt,
        "max_tokens": config.max_tokens,
        "temperature": 0,
    }
    encoded = json.dumps(body).encode()
    clients = [_Client(config, encoded) for _ in range(config.clients)]
    rss: list[float] = []
    stop_sampling = threading.Event()
    sampler = None
    if config.server_pid is not None:
        rss.append(_rss_mib(config.server_pid))
        sampler = threading.Thread(
            target=_sample_rss, args=(config.server_pid, rss, stop_sampling), daemon=True
        )
        sampler.start()
    start = time.monotonic()
    end = start + config.seconds
    threads = [
        threading.Thread(target=client.run_until, args=(end,), name=f"load-client-{i}")
        for i, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    if sampler is not None and config.server_pid is not None:
        stop_sampling.set()
        sampler.join()
        rss.append(_rss_mib(config.server_pid))
    statuses: Counter[str] = Counter()
    for client in clients:
        statuses.update(client.statuses)
    latencies = sorted(latency for client in clients for latency in client.latencies)
    return LoadTestResult(config.clients, elapsed, statuses, latencies, rss)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def format_table(result: LoadTestResult) -> str:
    """The result as Markdown tables: throughput and latency, failures, and the server's RSS."""
    seconds = max(result.seconds, 1e-9)
    failures = ", ".join(f"{k}: {v}" for k, v in result.failures.items()) or "none"
    lines = [
        "| clients | seconds | requests | ok | 429 (busy) | failed | requests/s | ok/s "
        "| p50 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result.clients} | {result.seconds:.1f} | {result.requests} | {result.successes} "
        f"| {result.busy} | {sum(result.failures.values())} | {result.requests / seconds:.1f} "
        f"| {result.successes / seconds:.1f} | {_ms(result.percentile(0.5))} "
        f"| {_ms(result.percentile(0.99))} |",
        "",
        f"failed by status: {failures} (latency percentiles: successful requests only)",
    ]
    if result.rss_mib:
        rss = result.rss_mib
        lines += [
            "",
            "| server RSS MiB | start | max | end |",
            "|---|---:|---:|---:|",
            f"| {len(rss)} samples | {rss[0]:.1f} | {max(rss):.1f} | {rss[-1]:.1f} |",
        ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``scripts/inference/load_test.py`` (names of :class:`LoadTestConfig`)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--url", required=True, help="the endpoint, e.g. http://127.0.0.1:8000")
    add("--clients", type=int, default=8, help="concurrent clients")
    add("--seconds", type=float, default=10.0, help="how long to start new requests")
    add("--prompt", default="def ")
    add("--max_tokens", type=int, default=16)
    add("--model", default=None, help="default: the first model /v1/models lists")
    add("--timeout", type=float, default=60.0, help="seconds per request")
    add("--api_key", default=None, help="sent as 'Authorization: Bearer <key>'")
    add("--server_pid", type=int, default=None, help="sample this process's RSS each second")
    return parser


def print_load_test(args: argparse.Namespace) -> None:
    """Run the load test the parsed flags describe and print its table."""
    print(format_table(run_load_test(LoadTestConfig(**vars(args)))), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The load-test script: parse ``argv`` (default: ``sys.argv[1:]``), run and print the
    table; returns the exit code."""
    return run_user_command(print_load_test, build_parser().parse_args(argv))
