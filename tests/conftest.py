"""Shared fixtures: a small real-text corpus, a byte-level BPE tokenizer trained on it (and its
chat-template copy), and a tiny saved Llama; the builders are in :mod:`tests.fixtures`.

Nothing is downloaded: the corpus is read from the running Python's standard library sources.
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing
import os
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry.utils.tokenizer_utils import build_tokenizer
from tests.fixtures import BUCKET


def _open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (a desktop's soft limit
    is often 1,024, which the Streaming tests pass), and return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


# Open file descriptors above which finished tests' Streaming shared memory is released: a
# fifth of the limit, at most 4,000 (one test opens a few hundred at most).
OPEN_FILES_TO_RELEASE_AT = min(4000, _open_files_limit() // 5)


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own temporary folder: whatever a run writes relative to the working
    directory (a ``save_folder: null`` run's ``{run_name}/metrics``, say) stays out of the repo."""
    monkeypatch.chdir(tmp_path)


# What Composer's single-process ``dist.initialize_dist`` puts in the environment.
LAUNCHER_ENV_VARS = (
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "RANK",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)
# What an in-process train run sets from its config before CUDA starts (``apply_cuda_env``).
CUDA_ENV_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "CUDA_MODULE_LOADING")


@pytest.fixture(autouse=True)
def _leave_no_process_group() -> Iterator[None]:
    """Tear down the process group an in-process run started, and restore the launcher and CUDA
    variables set for it, so that no test sees an earlier test's run environment."""
    before = {name: os.environ.get(name) for name in (*LAUNCHER_ENV_VARS, *CUDA_ENV_VARS)}
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _release_streaming_shared_memory() -> Iterator[None]:
    """Close the shared memory of the Streaming datasets that finished tests left behind.

    Streaming registers each shared-memory block's cleanup with ``atexit``, which keeps every
    block (and its file descriptor) alive until the process exits. A training run builds a
    handful of datasets; this test process builds hundreds and would run out of descriptors,
    so once many are open (``OPEN_FILES_TO_RELEASE_AT``) the finished tests' blocks are closed.
    """
    yield
    if len(os.listdir("/proc/self/fd")) < OPEN_FILES_TO_RELEASE_AT:
        return
    from streaming.base.shared.memory import SharedMemory

    gc.collect()
    for block in [o for o in gc.get_objects() if isinstance(o, SharedMemory)]:
        try:
            block.cleanup()
        except (BufferError, OSError):  # still viewed by a live array: leave it open
            continue
        atexit.unregister(block.cleanup)


@pytest.fixture(autouse=True)
def _stop_leftover_loader_workers() -> Iterator[None]:
    """Stop the DataLoader workers a finished test left running.

    A Composer ``DataSpec`` refers to itself (its default hooks are its own bound methods), so
    a loader inside one lives until the cyclic garbage collector runs, and so do its worker
    processes. Idle forked workers still share this process's memory, so every page it writes
    meanwhile is copied first: a training test that followed a loader test with 8 workers ran 3x
    slower. And when the collector does free such a loader, torch's shutdown waits 5 s for each
    worker (the queues are finalized before the stop message is sent): 40 s inside whichever
    test triggered the collection. So the workers a test started are stopped when it ends.
    """
    before = set(multiprocessing.active_children())
    yield
    started = set(multiprocessing.active_children()) - before
    if not started:
        return
    from torch.utils.data import DataLoader

    from llmfoundry.data.text_data import stop_persistent_workers

    # type(), not isinstance(): some objects answer __class__ lookups with a warning.
    loaders = [o for o in gc.get_objects() if issubclass(type(o), DataLoader)]
    for loader in loaders:
        if started.intersection(getattr(loader._iterator, "_workers", ())):
            stop_persistent_workers(loader)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture(scope="session")
def corpus_texts() -> list[str]:
    """A few stdlib source files, as documents (about 150 KB of real text)."""
    # tests.fixtures is imported where used: it loads Composer and peft, which not every test needs.
    from tests.fixtures import stdlib_corpus

    return stdlib_corpus()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, corpus_texts: list[str]) -> Path:
    """A byte-level BPE tokenizer (vocab 512, ``<|endoftext|>`` = 0, ``<|pad|>`` = 1) saved to a folder."""
    from tests.fixtures import save_bpe_tokenizer

    return save_bpe_tokenizer(tmp_path_factory.mktemp("tokenizer"), corpus_texts)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    """The fixture tokenizer, loaded back through the normal loading path."""
    return build_tokenizer(str(tokenizer_dir))


@pytest.fixture(scope="session")
def chat_tokenizer_dir(
    tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path
) -> tuple[Path, PreTrainedTokenizerBase]:
    """The fixture tokenizer with ``CHAT_TEMPLATE``, saved to a folder; the folder and tokenizer."""
    from tests.fixtures import save_chat_tokenizer

    folder = tmp_path_factory.mktemp("chat-tokenizer")
    return folder, save_chat_tokenizer(folder, tokenizer_dir)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``save_llama``'s tiny Llama (hidden 32, 2 layers, GQA, seed 0, no tokenizer), saved once;
    tests only read it (copy it before changing it)."""
    from tests.fixtures import save_llama

    return save_llama(tmp_path_factory.mktemp("llama") / "model")


@pytest.fixture(scope="session")
def tiny_llama_dir(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> Path:
    """``save_tiny_llama``'s Llama (hidden 32, 64 positions, seed 0) with the fixture tokenizer,
    saved once; tests only read it (copy it before changing it)."""
    from tests.fixtures import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "llama", tokenizer)


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """``save_tiny_t5``'s 1+1-layer T5 with the fixture tokenizer, saved once; tests only read it."""
    from tests.fixtures import save_tiny_t5

    return save_tiny_t5(tmp_path_factory.mktemp("tiny-t5"), tokenizer)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A mocked S3 with one empty bucket; yields a boto3 client for it."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    # Streaming's S3 clients use S3_ENDPOINT_URL when set; moto intercepts the default endpoint.
    monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client
