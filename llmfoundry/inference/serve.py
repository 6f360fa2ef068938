"""An OpenAI-compatible HTTP endpoint for a Hugging Face model folder: the logic of ``serve.py``.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions`` and
``POST /v1/chat/completions`` (OpenAI's request and response shapes, ``stream`` as server-sent
events). Errors come back as OpenAI-style bodies, ``{"error": {"message", "type", "param",
"code"}}``, and the server keeps serving.

Protection: at most ``max_queue`` prompts wait for the worker (more get 429 with
``Retry-After``; while shutting down, 503); with an API key (``--api_key`` or the
``LLMFOUNDRY_API_KEY`` variable) every route but ``/health`` needs ``Authorization: Bearer``.

How requests run: one worker thread owns the model. It waits up to ``batch_wait_ms`` for
requests to gather, takes up to ``max_batch_size`` prompts that can share a ``generate`` call
and runs them as one left-padded batch. Greedy prompts (``temperature: 0``) from any requests
share a batch: each keeps its own ``max_tokens`` and ``stop`` strings, and with left padding
and the attention mask a prompt's greedy text does not depend on its batch mates. A sampled
request runs apart from the others (its prompts together), so that its ``seed`` reproduces its
text. Streaming requests batch like the others: the text of each prompt is handed to its request
as the tokens arrive, holding back whatever could still turn out to be the start of a stop string.

Tests start the server in-process with :func:`start_server` (uvicorn in a thread on a free
loopback port); the script calls :func:`serve`. The settings (:class:`ServeConfig`, which names
the model as a :class:`~llmfoundry.inference.options.ModelSource`) live in ``serve_config``, the
worker in ``serve_batching``, the HTTP layer (FastAPI) in ``serve_api``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmfoundry.inference.options import ModelSource
from llmfoundry.inference.serve_batching import GenerationWorker, ServedModel
from llmfoundry.inference.serve_config import API_KEY_VARIABLE, ServeConfig, resolve_api_key
from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError

logger = logging.getLogger(__name__)

__all__ = [
    "API_KEY_VARIABLE",
    "ModelSource",
    "RunningServer",
    "ServeConfig",
    "ServedModel",
    "load_served_model",
    "resolve_api_key",
    "serve",
    "start_server",
]


def load_served_model(source: ModelSource) -> ServedModel:
    """Load ``source`` for serving (on CUDA when available, unless it names a device).

    Raises:
        ConfigError, MissingFileError, TokenizerError: on a bad dtype, folder or tokenizer.
    """
    from llmfoundry.inference.generate import load_for_generation

    model, tokenizer = load_for_generation(source)
    served = ServedModel.wrap(model, tokenizer)
    logger.info(
        "loaded %s on %s (%s, context %s tokens)",
        source.name_or_path,
        model.device,
        source.model_dtype,
        served.context_length or "unlimited",
    )
    return served


# ----------------------------------------------------------------------------------------------
# Running the server
# ----------------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one).

    It listens from here on, so connections made before the server's loop runs wait in the
    backlog instead of being refused.

    Raises:
        ConfigError: if the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({err.strerror}); pick another --port"
        ) from err
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(config: ServeConfig, worker: GenerationWorker) -> Any:
    """The uvicorn server of the endpoint's app.

    Raises:
        MissingDependencyError: if FastAPI or uvicorn is not installed (the ``serve`` extra).
    """
    try:
        import uvicorn

        from llmfoundry.inference.serve_api import build_app
    except ImportError as err:
        raise MissingDependencyError(
            f"serving needs fastapi and uvicorn ({err.name} is missing): "
            "pip install 'llm-foundry[serve]'"
        ) from err

    class DrainingServer(uvicorn.Server):
        """Answers 503 to new requests from the moment shutdown starts (a signal or
        ``should_exit``) while the requests already running finish."""

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            worker.drain()
            await super().shutdown(sockets)

    app = build_app(config, worker.served, worker)
    uvicorn_config = uvicorn.Config(
        app,
        log_config=None,
        access_log=config.access_log,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return DrainingServer(uvicorn_config)


@dataclass
class RunningServer:
    """A server running in background threads (see :func:`start_server`).

    Attributes:
        url: ``http://host:port`` it listens on.
        worker: the generation worker (``generate_calls``, ``paused()`` for tests).
        served: the model being served.
    """

    url: str
    worker: GenerationWorker
    served: ServedModel
    _server: Any
    _thread: threading.Thread
    _socket: socket.socket

    def stop(self) -> None:
        """Stop accepting requests, finish the server thread, then stop the worker."""
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.worker.stop()
        self._socket.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _start_worker(config: ServeConfig, served: ServedModel) -> GenerationWorker:
    worker = GenerationWorker(
        served, config.max_batch_size, config.batch_wait_ms / 1000, config.max_queue
    )
    worker.start()
    return worker


def start_server(config: ServeConfig, served: ServedModel | None = None) -> RunningServer:
    """Serve in background threads and return once the server accepts connections.

    Args:
        config: the settings (``port=0`` for a free port).
        served: an already-loaded model to serve; default: load ``config.source``.

    Returns:
        The running server; call ``stop()`` (or use it as a context manager) to end it.

    Raises:
        ConfigError, MissingFileError, MissingDependencyError: on bad settings, a missing model
            folder or missing serving packages.
    """
    served = served or load_served_model(config.source)
    worker = _start_worker(config, served)
    try:
        server = _uvicorn_server(config, worker)
        sock = _bind(config.host, config.port)
    except BaseException:
        worker.stop()
        raise
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    while not server.started:
        if not thread.is_alive():
            worker.stop()
            sock.close()
            raise RuntimeError("the HTTP server thread exited before it started serving")
        time.sleep(0.01)
    url = _url(sock)
    logger.info("serving '%s' on %s", config.served_name, url)
    return RunningServer(
        url=url, worker=worker, served=served, _server=server, _thread=thread, _socket=sock
    )


def serve(config: ServeConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Load the model and serve it until interrupted.

    SIGINT (Ctrl-C) or SIGTERM shut the server down gracefully; uvicorn then hands the signal
    to the process's own handler (Composer's, installed when ``llmfoundry`` is imported), which
    exits with status 128 + the signal's number.

    Args:
        config: the settings.
        on_ready: called with the URL once the address is bound (before requests are served).

    Raises:
        ConfigError, MissingFileError, MissingDependencyError: as :func:`start_server`.
    """
    served = load_served_model(config.source)
    worker = _start_worker(config, served)
    try:
        server = _uvicorn_server(config, worker)
        sock = _bind(config.host, config.port)
        with sock:
            url = _url(sock)
            if not _is_loopback(config.host) and config.api_key is None:
                logger.warning(
                    "listening on %s without an API key: anyone who can reach it may use it "
                    "(set --api_key or $%s)",
                    config.host,
                    API_KEY_VARIABLE,
                )
            logger.info("serving '%s' on %s", config.served_name, url)
            if on_ready is not None:
                on_ready(url)
            server.run(sockets=[sock])
    finally:
        worker.stop()


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
