"""A real uvicorn server on a free loopback port, `vlsearch serve` processes, and services over small libraries, for
the API tests."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn

from vlsearch.api.app import create_app
from vlsearch.api.service import Models, Service
from vlsearch.api.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(app):
    """Run `app` in a real uvicorn server on a free loopback port; yields its base URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


def wait_until_serving(proc: subprocess.Popen, url: str, timeout_s: float = 120) -> None:
    """Wait for a `vlsearch serve` process to answer /api/v1/healthz (it loads its models first); fail, with what
    it printed, if it exits or does not come up."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(url + "/api/v1/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "vlsearch serve did not come up"
        time.sleep(0.2)


def make_app(library, encoder, **kwargs):
    """The app over `library`, with models and settings from keyword arguments (Settings fields or Models
    fields)."""
    model_fields = {k: kwargs.pop(k) for k in ("captioner", "answerer", "matcher", "ocr") if k in kwargs}
    settings = Settings(library=library.root, model_dir=library.root / "models", **kwargs)
    return create_app(Service(library, Models(encoder=encoder, **model_fields), settings))
