"""The session fixture of the docs test: the environment the blocks run in (offline, with the
warm interpreter) and the `make demo` outputs the documents' commands start from."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docs import warm_python

# Everything the blocks run is offline. One intra-op thread per process: on a busy two-core
# machine torch's thread pool spends more time waiting than working (same results, several times
# faster there).
BLOCK_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
}
WARM_START_TIMEOUT_S = 300


@dataclass(frozen=True)
class DocsSession:
    """The blocks' environment, the same without the warm interpreter's shims, and a `make demo`
    output folder to copy into each sandbox."""

    env: dict[str, str]
    cold_env: dict[str, str]
    demo_out: Path


@pytest.fixture(scope="session")
def docs_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsSession]:
    """Offline; ``python``/``composer`` are the warm interpreter's shims (with
    ``DOCS_TEST_COLD_PYTHON=1``, this virtual environment's own); ``datasets`` caches in a
    temporary folder. The warm interpreter imports while this process makes the demo outputs."""
    env = {
        **os.environ,
        **BLOCK_ENV,
        "HF_DATASETS_CACHE": str(tmp_path_factory.mktemp("hf_datasets_cache")),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    env.pop("PYTHONPATH", None)
    demo_root = tmp_path_factory.mktemp("demo")
    if os.environ.get("DOCS_TEST_COLD_PYTHON") == "1":
        yield DocsSession(env, env, make_demo_out(demo_root))
        return
    with warm_server(env) as (process, shim_dir):
        demo_out = make_demo_out(demo_root)
        wait_until_ready(process)
        warm_env = {**env, "PATH": os.pathsep.join([str(shim_dir), env["PATH"]])}
        yield DocsSession(warm_env, env, demo_out)


def make_demo_out(root: Path) -> Path:
    """What `make demo` leaves in ``demo_out/`` (text, tokenizer, MDS, checkpoint, Hugging Face
    export, eval results), made by the demo's own code on a small corpus in two batches."""
    import torch

    from llmfoundry.command_utils.demo import run_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # as the blocks run (BLOCK_ENV); the warm interpreter imports meanwhile
    try:
        return run_demo(root / "demo_out", max_bytes=300_000, max_duration="2ba").out_dir
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def warm_server(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Start ``warm_python.py`` in its own process group (so that everything it forks is killed
    with it at the end); give the process and the folder of its shims."""
    folder = Path(tempfile.mkdtemp(prefix="warm-python-"))  # short: a socket path's limit is 107
    sock, shim_dir = folder / "sock", folder / "bin"
    warm_python.write_shims(shim_dir, sock)
    process = subprocess.Popen(
        [sys.executable, warm_python.__file__, str(sock), str(shim_dir)],
        env=env,
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield process, shim_dir
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def wait_until_ready(process: subprocess.Popen[str]) -> None:
    """Wait for the server's "ready" line."""
    assert process.stdout is not None
    # A selector, not select.select: earlier tests may leave this process with descriptors
    # numbered past select's limit of 1024.
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        readable = selector.select(WARM_START_TIMEOUT_S)
    if not readable or process.stdout.readline().strip() != "ready":
        pytest.fail("the warm interpreter did not start; DOCS_TEST_COLD_PYTHON=1 runs without it")
