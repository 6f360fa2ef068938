"""Starting and stopping the web UI's Gradio server, offline (no telemetry, no version check,
no share link), on a chosen or free port.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from llmfoundry.utils.cli_utils import one_line
from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    import gradio as gr

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Gradio reads these when it is imported and launched; they keep it from calling out.
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # no telemetry, and no version check with it
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SHARE": "False",
}


def import_gradio() -> ModuleType:
    """Import Gradio with its network calls switched off (see ``OFFLINE_ENV``).

    Raises:
        MissingDependencyError: if Gradio is not installed (the ``serve`` extra).
    """
    os.environ.update(OFFLINE_ENV)
    try:
        return importlib.import_module("gradio")
    except ImportError as err:
        raise MissingDependencyError(
            f"the web UI needs gradio ({err.name} is missing): pip install 'llm-foundry[serve]'"
        ) from err


@dataclass
class WebUI:
    """A running page.

    Attributes:
        app: the Gradio app.
        url: where a browser opens it (``http://host:port/``).
    """

    app: gr.Blocks
    url: str

    def close(self) -> None:
        """Stop the server and free the port."""
        self.app.close(verbose=False)

    def wait(self) -> None:
        """Serve until interrupted, then stop.

        Ctrl-C raises KeyboardInterrupt, which ends the wait quietly. Composer (which
        llmfoundry imports) turns SIGINT and SIGTERM into ``sys.exit(128 + signal)``; that
        exit still stops the server on its way out.
        """
        try:
            while self.app.is_running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            logger.info("stopping the web UI at %s", self.url)
            self.close()


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nobody listens on at ``host`` now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def launch(app: gr.Blocks, host: str = DEFAULT_HOST, port: int | None = None) -> WebUI:
    """Start serving ``app`` in a background thread and return at once.

    Args:
        app: from :func:`build_app`.
        host: the address to listen on; anything but loopback exposes the page (which has no
            login) to the network.
        port: the port; 0 or None picks a free one.

    Returns:
        The running page; call ``close()`` to stop it.

    Raises:
        ConfigError: if the port cannot be used (taken, or not allowed).
    """
    if host not in LOOPBACK_HOSTS:
        logger.warning("the web UI listens on %s: anyone who can reach it can use the model", host)
    port = port or free_port(host)
    os.environ.update(OFFLINE_ENV)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            share=False,
            inbrowser=False,
            quiet=True,
            show_error=True,
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            enable_monitoring=False,
            run_history=False,
            footer_links=["api", "settings"],
        )
    except OSError as err:
        raise ConfigError(
            f"--port={port}: the web UI cannot listen on {host}:{port} ({one_line(err)}); "
            "pick another port, or 0 for a free one"
        ) from err
    url = f"http://{'[' + host + ']' if ':' in host else host}:{app.server_port}/"
    return WebUI(app=app, url=url)
