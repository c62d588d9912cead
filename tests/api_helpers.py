"""A real uvicorn server on a free loopback port, and services over small libraries, for the API tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

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


def make_app(library, encoder, **kwargs):
    """The app over `library`, with models and settings from keyword arguments (Settings fields or Models
    fields)."""
    model_fields = {k: kwargs.pop(k) for k in ("captioner", "answerer", "matcher", "ocr") if k in kwargs}
    settings = Settings(library=library.root, model_dir=library.root / "models", **kwargs)
    return create_app(Service(library, Models(encoder=encoder, **model_fields), settings))
