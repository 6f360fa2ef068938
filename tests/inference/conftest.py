"""Fixtures of the inference tests.

The endpoint tests (``test_serve*.py``) share a tiny MPT export served in-process on a free
loopback port: ``mpt_dir``, ``served``, ``server``, ``client`` and ``openai_client``, all
module-scoped (a module that defines a fixture of the same name uses its own). The training
fixtures ``mds_dir`` and ``trained_run`` come from ``tests/command_utils/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from transformers import PreTrainedTokenizerBase

from llmfoundry.inference.serve import (
    ModelSource,
    RunningServer,
    ServedModel,
    load_served_model,
    start_server,
)
from tests.command_utils.conftest import (  # noqa: F401  (fixtures, used by name)
    mds_dir,
    trained_run,
)
from tests.inference.serve_helpers import NAME, export_tiny_mpt, serve_config


@pytest.fixture(scope="module")
def mpt_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    return export_tiny_mpt(tmp_path_factory.mktemp("serve") / NAME, tokenizer)


@pytest.fixture(scope="module")
def served(mpt_dir: Path) -> ServedModel:
    return load_served_model(ModelSource(str(mpt_dir), trust_remote_code=True, device="cpu"))


@pytest.fixture(scope="module")
def server(mpt_dir: Path, served: ServedModel) -> Iterator[RunningServer]:
    running = start_server(serve_config(mpt_dir), served)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def openai_client(server: RunningServer) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
