"""Hostile requests, case by case, against a real server: path traversal in every path parameter and path filter,
symlinks out of the indexed folders, huge and negative numbers, strange unicode, SQL and FTS5 syntax in queries.
Each gets a 4xx with a JSON {error, detail} that says what to change, or a correct 2xx: never a 5xx, never a file
from outside the indexed folders, and the library is the same afterwards.

test_api.py covers the everyday errors and the first traversal and symlink cases; this file extends them."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from tests.api_helpers import make_app, serving
from tests.photos import picture, write_photo, write_photos
from vlsearch.indexer import Indexer
from vlsearch.library import ImageRecord, Library

KEY = "robust-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
SECRET = b"root:x:0:0:secret"  # in every file outside the indexed folders: it must never come back
ids: dict[str, int] = {}  # image id by path under the photos folder, filled by the fixture
INSIDE = ["photo_0000.jpg", "photo_0004.jpg"]
LINKED_OUT = ["photo_0001.jpg", "photo_0002.jpg", "photo_0003.jpg", "cam/pixel.jpg"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_encoder, tiny_models):
    """Six photos indexed under allowed/photos, and files outside it that links inside point at."""
    root = tmp_path_factory.mktemp("robust")
    photos = root / "allowed" / "photos"
    write_photos(photos, 5)
    write_photo(photos / "cam" / "pixel.jpg", 40, make="Google", model="Pixel_8%")
    private = root / "private"
    secret_jpg = write_photo(private / "secret.jpg", 77)
    secret_jpg.write_bytes(secret_jpg.read_bytes() + SECRET)  # a valid JPEG that carries the marker at its end
    (private / "passwd").write_bytes(SECRET + b"\n")
    lib = Library.open(root / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([photos])
    # After indexing, files are swapped for links out of the folder: a file link, a relative one, a chain of two,
    # and a folder link (so the file's own name is inside, its real path is not).
    swaps = {"photo_0001.jpg": secret_jpg, "photo_0002.jpg": Path("../../private/secret.jpg")}
    for name, target in swaps.items():
        (photos / name).unlink()
        (photos / name).symlink_to(target)
    (photos / "hop.jpg").symlink_to(secret_jpg)
    (photos / "photo_0003.jpg").unlink()
    (photos / "photo_0003.jpg").symlink_to(photos / "hop.jpg")
    (photos / "cam" / "pixel.jpg").unlink()
    (photos / "cam").rmdir()
    (photos / "cam").symlink_to(private)
    (private / "pixel.jpg").write_bytes(secret_jpg.read_bytes())
    app = make_app(lib, tiny_encoder, api_keys=[KEY], index_roots=[root / "allowed"], max_upload_bytes=300_000,
                   max_pixels=2_000_000, max_body_bytes=1_000_000, **tiny_models)
    with lib.session() as s:
        count = s.scalar(select(func.count()).select_from(ImageRecord))
        rows = s.execute(select(ImageRecord.id, ImageRecord.path))
        ids.update({str(Path(path).relative_to(photos)): image_id for image_id, path in rows})
    with serving(app) as url, CLIENT:
        yield url, photos, lib, count


def raw_request(url: str, method: str, target: str, body: bytes | None = None, headers: dict | None = None):
    """A request whose target goes out byte for byte (httpx would resolve `..` and re-encode): (status, body,
    content type). A redirect (Starlette's, from ".../x/" to ".../x") must stay on this server and path."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(method, target, body=body, headers={**AUTH, **(headers or {})})
        response = conn.getresponse()
        if response.status in (307, 308):
            location = urlsplit(response.getheader("location") or "")
            assert location.netloc == parts.netloc and location.path.startswith("/api/v1/"), (target, location)
            return 404, b'{"error": "not_found", "detail": "redirected"}', "application/json"
        return response.status, response.read(), response.getheader("content-type") or ""
    finally:
        conn.close()


def check(status: int, body: bytes, content_type: str, what) -> None:
    """A 4xx with our JSON error body or a 2xx; nothing from outside the indexed folders either way."""
    assert status < 500, (what, status, body[:300])
    assert SECRET not in body, what
    if status >= 400:
        assert content_type.startswith("application/json"), (what, content_type)
        error = json.loads(body)
        assert set(error) == {"error", "detail"} and error["detail"], (what, error)


CLIENT = httpx.Client(timeout=60)  # one connection pool for the hundreds of requests below


def send(url: str, method: str, endpoint: str, headers: dict | None = None, **kwargs) -> httpx.Response:
    r = CLIENT.request(method, url + endpoint, headers={**AUTH, **(headers or {})}, **kwargs)
    check(r.status_code, r.content, r.headers.get("content-type", ""), (method, endpoint, kwargs))
    return r


# -- path traversal in path parameters ------------------------------------------------------------------------

TRAVERSALS = [
    "..", "../..", "../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2e%2e", "%252e%252e%252fetc%252fpasswd", "..%5c..%5cetc%5cpasswd", "%2fetc%2fpasswd", "/etc/passwd",
    "1%00", "%00", "1%00.jpg", "1/../../../../etc/passwd", "....//....//etc/passwd", "1;/etc/passwd", "~root",
    "1%2f..%2f2", "%c0%ae%c0%ae%2f", "%ed%a0%80", "1%0d%0aX-Injected:%201", "0x1", "+1", "1.0", "1e3", "-0",
]
PATH_ROUTES = [("GET", "/api/v1/images/{}"), ("GET", "/api/v1/images/{}/thumbnail"), ("GET", "/api/v1/images/{}/file"),
               ("HEAD", "/api/v1/images/{}/file"), ("GET", "/api/v1/images/{}/similar"), ("GET", "/api/v1/jobs/{}"),
               ("DELETE", "/api/v1/images/{}")]


@pytest.mark.parametrize("method,route", PATH_ROUTES)
def test_traversal_in_path_parameters_is_refused(site, method, route):
    url, _, _, _ = site
    for segment in TRAVERSALS:
        target = route.format(segment)
        status, body, content_type = raw_request(url, method, target)
        if method != "HEAD":
            check(status, body, content_type, (method, target))
        assert status < 500
        if method == "DELETE":  # no traversal may name a real image: nothing is deleted
            assert status in (404, 405, 422), (target, status, body)


@pytest.mark.parametrize("name", LINKED_OUT)
def test_files_swapped_for_links_out_of_the_folders_are_never_read(site, name):
    """A file link, a relative link, a chain of links and a folder link: none is served, captioned, answered
    about or reranked with its content; the thumbnail made at indexing time is still fine to show."""
    url, _, _, _ = site
    image_id = ids[name]
    assert send(url, "GET", f"/api/v1/images/{image_id}/file").status_code == 404
    assert send(url, "GET", f"/api/v1/images/{image_id}/thumbnail").status_code == 200
    assert send(url, "POST", "/api/v1/vqa", data={"image_id": image_id, "question": "what is it?"}).status_code == 404
    assert send(url, "POST", "/api/v1/caption", data={"image_id": image_id, "prompt": "a"}).status_code == 404


def test_rerank_and_ask_do_not_read_files_linked_out_of_the_folders(site):
    url, _, _, _ = site
    reranked = send(url, "GET", "/api/v1/search", params={"q": "shapes", "rerank": 10, "k": 10}).json()["hits"]
    scored = {h["id"] for h in reranked if h["match_score"] is not None}
    inside = {ids[name] for name in INSIDE}
    assert scored == inside, reranked  # the two files still inside; the linked-out ones are left unread
    ask = send(url, "POST", "/api/v1/ask", json={"question": "which photos show shapes?", "threshold": 0,
                                                 "candidates": 10}).json()
    assert {f["id"] for f in ask["results"]} == inside and ask["candidates"] == 2


# -- path traversal in filters and index paths ----------------------------------------------------------------

PATH_FILTERS = ["../", "../../etc", "/../../etc", "/etc/passwd", "%2e%2e%2f", "/%2e%2e/%2e%2e/etc", "/\x00", "/a\x00b",
                "//", "/", "/" * 4096, "/" + "a" * 300, "/" + "a" * 5000, "relative", "~root", "/~root", "\\..\\..",
                "/\ud800", "/\u202etxt.gpj", "/photos/./../..", "C:\\Windows"]


@pytest.mark.parametrize("value", PATH_FILTERS, ids=range(len(PATH_FILTERS)))
def test_traversal_in_path_filters_finds_only_images_under_that_folder(site, value):
    url, photos, _, count = site
    requests = [("GET", "/api/v1/search", {"params": {"q": "x", "path": value}}),
                ("GET", "/api/v1/images/1/similar", {"params": {"path": value}}),
                ("POST", "/api/v1/search", {"json": {"text": "x", "filters": {"path": value}}}),
                ("POST", "/api/v1/search/image", {"data": {"path": value}, "files": {"file": ("q.jpg", _jpeg())}}),
                ("POST", "/api/v1/ask", {"json": {"question": "which photos show x?", "filters": {"path": value}}})]
    for method, endpoint, kwargs in requests:
        if "\ud800" in value:
            continue  # httpx cannot send a lone surrogate: test_lone_surrogates_and_nul_via_json_escapes does
        r = send(url, method, endpoint, **kwargs)
        if r.status_code == 200:  # only images under the folder the path names once normalised ("/a/.." is "/")
            folder = os.path.normpath(value).rstrip("/") + "/"
            hits = r.json().get("hits", r.json().get("results"))
            assert all(h["path"].startswith(folder) for h in hits) and len(hits) <= count, (value, r.text)


def _jpeg() -> bytes:
    import io

    buf = io.BytesIO()
    picture(3, (48, 36)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("path", ["{root}/../private", "{root}/photos/../../private", "{root}/photos/cam",
                                  "{root}/photos/cam/pixel.jpg", "{root}/photos/photo_0001.jpg", "/etc/passwd",
                                  "{root}/%2e%2e/private", "{root}/\x00", "{root}/photos/\ud800", "//etc", "../etc"])
def test_index_paths_out_of_the_roots_are_refused(site, path):
    url, photos, _, _ = site
    value = path.format(root=photos.parent)
    status, body, content_type = raw_request(url, "POST", "/api/v1/index",
                                             json.dumps({"paths": [value]}).encode(),
                                             {"content-type": "application/json"})
    check(status, body, content_type, value)
    assert status in (403, 404, 422), (value, status, body)


# -- numbers ---------------------------------------------------------------------------------------------------

NUMBERS = ["0", "-1", "10001", "1000000000", str(2**63), str(2**64), str(-(2**63) - 1), "1e9", "1.5", "nan",
           "-inf", "0x10", "５", ""]


@pytest.mark.parametrize("name", ["k", "offset", "rerank", "min_score"])
def test_huge_negative_and_malformed_numbers(site, name):
    url, _, _, _ = site
    for value in NUMBERS:
        for endpoint in ("/api/v1/search", "/api/v1/images/1/similar"):
            if name == "rerank" and endpoint.endswith("similar"):
                continue
            r = send(url, "GET", endpoint, params={"q": "x", name: value})
            if r.status_code == 200:
                assert len(r.json()["hits"]) <= r.json()["k"]
        body_value = value if _number(value) is None else _number(value)
        send(url, "POST", "/api/v1/search", json={"text": "x", name: body_value} if name != "min_score"
             else {"text": "x", "filters": {name: body_value}})


def _number(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


@pytest.mark.parametrize("image_id", [0, -1, 2**63, 2**63 - 1, 2**64, 10**30, 1.5, "1", "x", None, True, [1]])
def test_image_ids_in_bodies_and_forms(site, image_id):
    url, _, _, _ = site
    send(url, "POST", "/api/v1/search", json={"image_id": image_id, "k": 3})
    deleted = send(url, "POST", "/api/v1/images/delete", json={"ids": [image_id]})
    assert deleted.status_code in (200, 422) and not deleted.json().get("deleted"), deleted.text  # none of these
    # names an image: `true` and "1" are not the id 1 to a delete
    if image_id is not None and not isinstance(image_id, list):
        send(url, "POST", "/api/v1/caption", data={"image_id": str(image_id)})
        send(url, "POST", "/api/v1/vqa", data={"image_id": str(image_id), "question": "what?"})


# -- text: unicode, SQL, FTS5 ----------------------------------------------------------------------------------

UNICODE = ["שלום עולם", "\u202eevil\u202c", "مرحبا", "👨‍👩‍👧‍👦", "🏳️‍🌈 flag", "e\u0301\u0301\u0301", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫ", "\u200b",
           "\ufeffbom", "\uffff", "\U0010ffff", "a\u0000b", "\x7f\x1b[31m", "ｆｕｌｌｗｉｄｔｈ", "İstanbul ß ﬁ",
           "x" * 1000, "x" * 1001, "😀" * 1000]
SYNTAX = ["'; DROP TABLE images; --", "\"; DROP TABLE images_text; --", '"unbalanced', "unbalanced\"", '""', '"',
          "a NEAR/3 b", "NEAR(a b, 2)", "caption:x", "name:photo", "{name caption}:x", "*", "photo*", "^photo", "NOT",
          "NOT photo", "a AND", "OR OR", "(a", "a)", "((((((((((x", "1 OR 1=1", "x' UNION SELECT path FROM images --",
          "%", "_", "\\", "-photo", "+photo", ":", "photo_0000", "photo_0000.jpg"]


@pytest.mark.parametrize("q", UNICODE + SYNTAX, ids=range(len(UNICODE + SYNTAX)))
def test_any_text_in_every_mode(site, q):
    url, _, _, _ = site
    for mode in ("vector", "keyword", "hybrid"):
        get = send(url, "GET", "/api/v1/search", params={"q": q, "mode": mode})
        post = send(url, "POST", "/api/v1/search", json={"text": q, "mode": mode, "negatives": [q]
                                                          if mode != "keyword" else []})
        for r in (get, post):
            assert r.status_code in (200, 422), (q, mode, r.text)
        if "\x00" in q or len(q) > 1000:
            assert get.status_code == post.status_code == 422
        elif q.strip() and mode == "vector":
            assert get.status_code == 200 and get.json()["hits"], (q, get.text)
    send(url, "GET", "/api/v1/search", params={"q": "x", "camera": q})


@pytest.mark.parametrize("question", ["which photos show '; DROP TABLE images; --?", 'which photos show "a NEAR/3 b',
                                      "caption:x", "NOT *", "שלום?", "e\u0301\u0301", "?" * 500, "x" * 501])
def test_hostile_questions_to_the_collection(site, question):
    url, _, _, _ = site
    r = send(url, "POST", "/api/v1/ask", json={"question": question, "candidates": 3, "threshold": 0})
    assert r.status_code in (200, 422), r.text


def test_keyword_syntax_is_matched_as_words(site):
    url, _, _, _ = site
    exact = send(url, "GET", "/api/v1/search", params={"q": "photo_0000", "mode": "keyword"}).json()["hits"]
    assert [Path(h["path"]).name for h in exact] == ["photo_0000.jpg"]
    for q in ("NOT photo_0000", "caption:photo_0000", "photo_0000*", "^photo_0000", '"photo_0000'):
        hits = send(url, "GET", "/api/v1/search", params={"q": q, "mode": "keyword"}).json()["hits"]
        assert "photo_0000.jpg" in [Path(h["path"]).name for h in hits], q


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ud800\\u0041", "a\\udc80b", "\\u0000"])
def test_lone_surrogates_and_nul_via_json_escapes(site, escape):
    url, _, _, _ = site
    for template in ('{{"text": "{}"}}', '{{"text": "x", "negatives": ["{}"]}}',
                     '{{"text": "x", "filters": {{"camera": "{}"}}}}', '{{"text": "x", "filters": {{"path": "/{}"}}}}',
                     '{{"question": "which photos show {}?"}}'):
        endpoint = "/api/v1/ask" if "question" in template else "/api/v1/search"
        r = send(url, "POST", endpoint, content=template.format(escape).encode(),
                 headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 422, (template, escape, r.text)


@pytest.mark.parametrize("q", ["", " ", "\t\n", "\u3000", "\u200b"])
def test_empty_and_blank_queries(site, q):
    url, _, _, _ = site
    for mode in ("vector", "keyword", "hybrid"):
        get = send(url, "GET", "/api/v1/search", params={"q": q, "mode": mode})
        post = send(url, "POST", "/api/v1/search", json={"text": q, "mode": mode})
        if q != "\u200b":  # a zero-width space is not whitespace to Python: a (meaningless) query
            assert get.status_code == post.status_code == 422, (q, mode, get.text, post.text)
    assert send(url, "GET", "/api/v1/search?q=").status_code == 422


def test_the_library_is_intact_afterwards(site):
    url, _, lib, count = site
    with lib.session() as s:
        assert s.scalar(select(func.count()).select_from(ImageRecord)) == count
    assert send(url, "GET", "/api/v1/stats").json()["images"] == count
    hits = send(url, "GET", "/api/v1/search", params={"q": "photo_0000", "mode": "keyword"}).json()["hits"]
    assert [Path(h["path"]).name for h in hits] == ["photo_0000.jpg"]


# -- the engine itself (the CLI and the API both call it) -----------------------------------------------------


@pytest.mark.parametrize("query,error", [
    (dict(text="\ud800", mode="keyword"), "lone surrogate"),
    (dict(text="x", negatives=("a\udc80",)), "lone surrogate"),
    (dict(text="x", text_weight=float("nan")), "finite"),
    (dict(text="x", image_weight=float("inf"), image_id=1), "finite"),
    (dict(text="x", text_weight=1e308, negatives=("y",), negative_weight=-1e308), "too large"),
    (dict(text="x", filters=dict(camera="\udfff")), "lone surrogate"),
    (dict(text="x", filters=dict(path_prefix="/a\x00b")), "NUL"),
    (dict(text="x", filters=dict(path_prefix="~no-such-user-here/photos")), "unknown user"),
    (dict(text="x", filters=dict(min_score=float("nan"))), "NaN"),
])
def test_engine_refuses_unusable_queries_with_a_user_error(site, tiny_encoder, query, error):
    """What would have failed deep in SQLite, the tokenizer or the path resolver is a ValueError that says why."""
    from vlsearch.search import Filters, SearchEngine, SearchQuery

    _, _, lib, _ = site
    with pytest.raises(ValueError, match=error) as raised:
        query = {**query, "filters": Filters(**query.get("filters", {}))}
        SearchEngine(lib, tiny_encoder).search(SearchQuery(**query))
    assert type(raised.value) is ValueError


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_engine_takes_any_k_and_any_image_id(site, tiny_encoder, mode):
    """k past SQLite's integer range (a LIMIT it cannot bind) still answers; an id past it is simply unknown."""
    from vlsearch.search import Filters, SearchEngine, SearchQuery

    _, _, lib, count = site
    engine = SearchEngine(lib, tiny_encoder)
    for k in (10**9, 2**63, 2**64):
        for filters in (Filters(), Filters(camera="o")):
            hits = engine.search(SearchQuery(text="photo_0000 photo", mode=mode, k=k, filters=filters))
            assert (1 if filters.empty else 0) <= len(hits) <= count
    if mode != "keyword":
        for image_id in (2**63, 2**64, -(2**63) - 1, 0):
            with pytest.raises(LookupError, match=str(image_id)):
                engine.search(SearchQuery(image_id=image_id, mode=mode))
