"""The served page and search endpoint, over real HTTP from a real uvicorn server."""

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from api.app import create_app
from indexer import Indexer
from library import Library
from search import SearchEngine
from tests.photos import write_photos


@pytest.fixture
def server(tmp_path, tiny_encoder):
    write_photos(tmp_path / "photos", 5)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(SearchEngine(lib, tiny_encoder)), host="127.0.0.1", port=port,
                            log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_search_endpoint_returns_hits_with_thumbnails(server):
    r = httpx.get(f"{server}/api/v1/search", params={"q": "a photo", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "tiny-random" and len(body["hits"]) == 3
    thumb = httpx.get(server + body["hits"][0]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"


def test_bad_requests_get_4xx_with_a_reason(server):
    assert httpx.get(f"{server}/api/v1/search", params={"q": ""}).status_code == 422
    blank = httpx.get(f"{server}/api/v1/search", params={"q": "   "})
    assert blank.status_code == 422 and "blank" in blank.json()["detail"]
    missing = httpx.get(f"{server}/api/v1/images/9999/thumbnail")
    assert missing.status_code == 404 and "9999" in missing.json()["detail"]


def test_page_is_served(server):
    r = httpx.get(server + "/")
    assert r.status_code == 200 and "<form" in r.text and "/api/v1/search" in r.text
