"""vlsearch.client against a real server: every operation of the schema has a method, answers come back as the
server's own models, errors as typed exceptions with the server's words, retries on 429/503 and lost connections."""

from __future__ import annotations

import asyncio
import inspect

import httpx
import pytest
from PIL import Image

from tests.api_helpers import make_app, serving
from tests.photos import write_photos
from vlsearch.client import AsyncClient, Client, ConnectionFailed, Invalid, NotFound, Retries, Unauthorized
from vlsearch.client.calls import API, Call
from vlsearch.client.operations import Operations
from vlsearch.indexer import Indexer
from vlsearch.library import Library

KEY = "c" * 32
# The least each method needs, to describe its call.
MINIMAL = {
    "search": ("x",), "search_combined": ({"text": "x"},), "search_image": (b"x",), "similar": (1,),
    "similar_products": ("p",), "image": (1,), "thumbnail": (1,), "file": (1,), "forget": (1,), "forget_many": ([1],),
    "caption": (b"x",), "caption_batch": ([b"x"],), "vqa": ("what?", b"x"), "ask": ("which?",), "duplicates": (),
    "evaluate": ([{"text": "x", "relevant": ["/a.jpg"]}],), "index": (["/photos"],), "jobs": (), "job": (1,),
    "stats": (), "health": (), "metrics": (),
}


class Recorder(Operations):
    def __init__(self) -> None:
        self.calls: list[Call] = []

    def _send(self, call: Call):
        self.calls.append(call)


def test_the_client_covers_every_operation_in_the_schema(tmp_path, tiny_encoder):
    lib = Library.open(tmp_path / "lib")
    schema = make_app(lib, tiny_encoder).openapi()
    lib.close()
    operations = {(method.upper(), path) for path, item in schema["paths"].items() for method in item
                  if path.startswith(API)}
    methods = {name for name, _ in inspect.getmembers(Operations, inspect.isfunction) if not name.startswith("_")}
    assert methods == set(MINIMAL), "a new operation needs its line in MINIMAL"
    recorder = Recorder()
    for name, args in MINIMAL.items():
        getattr(recorder, name)(*args)
    assert {(c.method, API + c.route) for c in recorder.calls} == operations


@pytest.fixture
def server(tmp_path, tiny_encoder):
    write_photos(tmp_path / "photos", 5)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with serving(make_app(lib, tiny_encoder, api_keys=[KEY])) as url:
        yield url, tmp_path / "photos"
    lib.close()


def test_the_client_answers_with_the_servers_models_and_raises_its_errors(server):
    url, photos = server
    with Client(url) as api:
        assert api.health().status == "ok" and api.stats().images == 5
        first = api.search("a photo", k=2)
        assert len(first.hits) == 2 and first.next_offset == 2
        assert len(list(api.iter_search("a photo", page_size=2))) == 5  # three pages
        hit = first.hits[0]
        assert api.image(hit.id).path == hit.path and api.thumbnail(hit.id)[:2] == b"\xff\xd8"
        assert len(api.similar(hit.id, k=3).hits) == 3
        by_path = api.search_image(photos / "photo_0001.jpg", k=1).hits[0]
        with Image.open(photos / "photo_0001.jpg") as image:
            assert api.search_image(image, k=1).hits[0].id == by_path.id
        strict = api.duplicates(copy_threshold=0.9999, near_threshold=0.9999)  # random weights: photos look alike
        assert strict.total == 0 and api.jobs() == [] and "vlsearch_" in api.metrics()
        scored = api.evaluate([{"text": "a photo", "relevant": [hit.path]}], modes=["vector"])
        assert scored.modes[0].scored == 1
        with pytest.raises(NotFound) as missing:
            api.image(999_999)
        assert missing.value.status == 404 and "999999" in missing.value.detail
        with pytest.raises(Unauthorized):
            api.forget(hit.id)
        with pytest.raises(Invalid) as invalid:
            api.search("a photo", k=2, offset=9_999)
        assert "offset" in invalid.value.detail
    with Client(url, key=KEY) as admin:
        assert admin.forget(hit.id).id == hit.id
        assert admin.stats().images == 4


def test_the_async_client_does_the_same(server):
    url, _ = server

    async def go():
        async with AsyncClient(url) as api:
            found = await api.search("a photo", k=5)
            every = [h async for h in api.iter_search("a photo", page_size=2)]
            return found, every, await api.health()

    found, every, health = asyncio.run(go())
    assert [h.id for h in every] == [h.id for h in found.hits] and health.status == "ok"


def test_busy_and_lost_servers_are_tried_again_then_reported():
    answers = iter([httpx.Response(503, json={"error": "unavailable", "detail": "loading"}),
                    httpx.Response(429, json={"error": "rate_limited", "detail": "slow down"}, headers={
                        "Retry-After": "0"}),
                    httpx.Response(200, json={"status": "ok", "model": "m", "images": 0})])
    seen = []
    transport = httpx.MockTransport(lambda request: seen.append(request) or next(answers))
    with Client("http://vlsearch.test", retries=Retries(attempts=3, backoff=0), transport=transport) as api:
        assert api.health().status == "ok" and len(seen) == 3

    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    with Client("http://vlsearch.test", retries=Retries(attempts=2, backoff=0),
                transport=httpx.MockTransport(refuse)) as api, pytest.raises(ConnectionFailed):
        api.stats()


def test_a_write_that_may_have_reached_the_server_is_not_sent_again():
    seen = []

    def slow(request):
        seen.append(request)
        raise httpx.ReadTimeout("no answer in time", request=request)

    with Client("http://vlsearch.test", retries=Retries(attempts=4, backoff=0),
                transport=httpx.MockTransport(slow)) as api:
        with pytest.raises(ConnectionFailed):
            api.index(["/photos"])  # the job may have started: a second POST would be refused as busy
        assert len(seen) == 1
        with pytest.raises(ConnectionFailed):
            api.stats()  # a read is tried again
        assert len(seen) == 1 + 4
