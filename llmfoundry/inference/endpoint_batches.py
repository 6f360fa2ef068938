"""LLM Foundry's form of ``endpoint_generate.py``: ``-i`` prompts in batches, ``-o`` a CSV file.

    python scripts/inference/endpoint_generate.py -i "Hello" file::prompts.txt -o out.csv \\
        -e https://my-host/serving-endpoints/my-model/invocations

The prompts (``-i``) are strings and ``file::path`` files, split at ``--prompt-delimiter`` (a
newline by default); an object-store file (``s3://bucket/prompts.txt``) is downloaded and read the
same way. ``--batch-size`` prompts go in one request (a list ``prompt``) to the URL as given
(``-e``, else ``$ENDPOINT_URL``), at most ``--rate-limit`` requests a second, with
``max_tokens``, ``temperature``, ``top_k`` and ``top_p`` (defaults 100, 1.0, 50 and 1.0, as in
LLM Foundry); ``$ENDPOINT_API_KEY`` is the ``Authorization`` header, as it is. The answers go to
the CSV file ``-o`` with LLM Foundry's columns ``batch,prompt,output``; an object-store ``-o`` is
a folder that gets ``output.csv``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmfoundry.inference.client import (
    RETRIED_STATUSES,
    EndpointResult,
    EndpointSummary,
    RequestSettings,
    endpoint_client,
    send_in_batches,
)
from llmfoundry.utils.config_checks import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check_fields_of,
)
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.file_utils import atomic_write_text
from llmfoundry.utils.http_client import RetryPolicy
from llmfoundry.utils.object_store import LISTABLE_SCHEMES, RemoteFolder, is_remote
from llmfoundry.utils.prompt_files import PROMPTFILE_PREFIX, load_prompts

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

ENDPOINT_URL_ENV = "ENDPOINT_URL"
ENDPOINT_API_KEY_ENV = "ENDPOINT_API_KEY"
CSV_COLUMNS = ("batch", "prompt", "output")
CSV_NAME = "output.csv"  # the file an object-store -o folder gets
# Inputs that name an object-store file rather than being prompts themselves.
OBJECT_STORE_PREFIXES = tuple(f"{scheme}://" for scheme in LISTABLE_SCHEMES)


@dataclass(frozen=True)
class BatchedQuery:
    """The settings of LLM Foundry's form, with its defaults.

    Attributes:
        max_tokens, temperature, top_k, top_p: sent with every request.
        batch_size: prompts per request.
        rate_limit: requests started per second, at most.
        model: sent as ``model`` when given (LLM Foundry sends none).
        parallel: requests in flight at once.
        retries, backoff_s, timeout_s: as the JSON-lines form's.
    """

    max_tokens: PositiveInt = 100
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    batch_size: PositiveInt = 10
    rate_limit: PositiveFloat = 75.0
    model: str | None = None
    parallel: PositiveInt = 4
    retries: NonNegativeInt = 3
    backoff_s: float = 0.5
    timeout_s: PositiveFloat = 300.0

    def __post_init__(self) -> None:
        check_fields_of(self, "--")
        if self.batch_size > self.rate_limit:
            raise ConfigError(
                f"--batch-size {self.batch_size} is larger than --rate-limit {self.rate_limit}; "
                "lower the batch size or raise the limit"
            )


def endpoint_url(endpoint: str | None) -> str:
    """``-e``, else ``$ENDPOINT_URL``.

    Raises:
        ConfigError: if neither is set.
    """
    url = endpoint or os.environ.get(ENDPOINT_URL_ENV)
    if not url:
        raise ConfigError(f"give the endpoint's URL with -e/--endpoint or ${ENDPOINT_URL_ENV}")
    return url


def write_csv(results: Sequence[EndpointResult], batch_size: int, output: str | Path) -> Path:
    """The results as LLM Foundry's CSV (``batch,prompt,output``), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for index, result in enumerate(results):
        writer.writerow([index // batch_size, result.prompt, result.text or ""])
    output = Path(output)
    atomic_write_text(output, buffer.getvalue())
    return output


def generate_csv_from_endpoint(
    inputs: Sequence[str],
    output_file: str | Path,
    endpoint: str | None = None,
    prompt_delimiter: str | None = "\n",
    query: BatchedQuery | None = None,
    api_key: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> EndpointSummary:
    """Read the prompts, send them in batches, write the CSV: the whole command. ``api_key``
    (default ``$ENDPOINT_API_KEY``) is sent as the ``Authorization`` header as it is.

    Raises:
        ConfigError, MissingFileError: on bad settings, a missing prompt file, or an
            object store that cannot be read or written.
    """
    query = query or BatchedQuery()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        prompts = load_prompts(_downloaded(inputs, Path(scratch)), prompt_delimiter)
    if not prompts:
        raise ConfigError("-i/--inputs gave no prompts")
    url = endpoint_url(endpoint)
    api_key = api_key or os.environ.get(ENDPOINT_API_KEY_ENV, "")
    if not api_key:
        logger.warning(
            "$%s is not set: requests carry no Authorization header", ENDPOINT_API_KEY_ENV
        )
    fields: dict[str, object] = {
        "max_tokens": query.max_tokens,
        "temperature": query.temperature,
        "top_k": query.top_k,
        "top_p": query.top_p,
    }
    if query.model is not None:
        fields["model"] = query.model
    headers = {"Authorization": api_key} if api_key else {}
    settings = RequestSettings(
        url=url,
        chat=False,
        fields=fields,
        retry=RetryPolicy(query.retries, query.backoff_s, RETRIED_STATUSES),
        min_interval_s=1.0 / query.rate_limit,
    )
    logger.info("sending %d prompts to %s, %d a request", len(prompts), url, query.batch_size)
    with endpoint_client(query.parallel, query.timeout_s, headers, transport) as client:
        results = send_in_batches(client, settings, prompts, query.batch_size, query.parallel)
    output = _write_output(results, query.batch_size, str(output_file))
    return EndpointSummary(results=results, output=output, elapsed_s=time.perf_counter() - start)


def _downloaded(inputs: Sequence[str], scratch: Path) -> list[str]:
    """``inputs`` with each object-store file downloaded into ``scratch`` and named
    ``file::<local path>``."""
    local: list[str] = []
    for number, entry in enumerate(inputs):
        if not entry.startswith(OBJECT_STORE_PREFIXES):
            local.append(entry)
            continue
        prefix, _, name = entry.rpartition("/")
        folder = RemoteFolder(prefix, "-i/--inputs", scratch / str(number))
        folder.download(name, folder.local / name)
        local.append(f"{PROMPTFILE_PREFIX}{folder.local / name}")
    return local


def _write_output(results: Sequence[EndpointResult], batch_size: int, target: str) -> Path | str:
    """The CSV at ``target``, or, for an object-store folder, its ``output.csv`` uploaded."""
    if not is_remote(target):
        return write_csv(results, batch_size, target)
    with tempfile.TemporaryDirectory() as scratch:
        folder = RemoteFolder(target, "-o/--output-folder", scratch)
        write_csv(results, batch_size, folder.local / CSV_NAME)
        folder.upload(CSV_NAME)
    return f"{folder.uri}/{CSV_NAME}"
