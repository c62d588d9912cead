"""The HTTP API over real HTTP (uvicorn on a loopback port): every endpoint's answer and its documented errors,
API keys, limits, file serving inside the indexed folders only, and index jobs running beside searches."""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import make_app, serving
from tests.photos import png_bomb, write_photo, write_photos
from vlsearch.indexer import Indexer
from vlsearch.library import Library

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_encoder, tiny_models):
    """A library of 8 indexed photos (2 with camera and date) served with keys and an allowed index root."""
    root = tmp_path_factory.mktemp("api")
    photos = root / "allowed" / "photos"
    write_photos(photos, 6)
    write_photo(photos / "pixel_may.jpg", 50, taken=datetime(2024, 5, 3), make="Google", model="Pixel 8")
    write_photo(photos / "canon_jan.jpg", 51, taken=datetime(2023, 1, 9), make="Canon", model="EOS R6")
    lib = Library.open(root / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([photos])
    app = make_app(lib, tiny_encoder, api_keys=[KEY], index_roots=[root / "allowed"], max_upload_bytes=300_000,
                   max_pixels=2_000_000, max_body_bytes=1_000_000, **tiny_models)
    with serving(app) as url:
        yield url, photos, lib


def jpeg(seed: int = 3, size=(64, 48)) -> bytes:
    from tests.photos import picture

    buf = io.BytesIO()
    picture(seed, size).save(buf, format="JPEG")
    return buf.getvalue()


def get(url, endpoint, **params):
    return httpx.get(url + endpoint, params=params, timeout=60)


def assert_error(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    for w in words:
        assert w in body["detail"], body


# -- search ---------------------------------------------------------------------------------------


def test_get_search_pages_through_every_image_once(site):
    url, _, _ = site
    first = get(url, "/api/v1/search", q="a photo", k=3).json()
    assert first["model"] == "tiny-random" and len(first["hits"]) == 3 and first["next_offset"] == 3
    seen = [h["id"] for h in first["hits"]]
    offset = first["next_offset"]
    while offset is not None:
        page = get(url, "/api/v1/search", q="a photo", k=3, offset=offset).json()
        seen += [h["id"] for h in page["hits"]]
        offset = page["next_offset"]
    assert sorted(seen) == list(range(1, 9))
    scores = [h["score"] for h in first["hits"]]
    assert scores == sorted(scores, reverse=True)
    hit = first["hits"][0]
    assert hit["thumbnail_url"] == f"/api/v1/images/{hit['id']}/thumbnail" and hit["file_url"].endswith("/file")


def test_pages_end_exactly_and_date_sorted_and_hybrid_pages_never_repeat(site, monkeypatch):
    url, _, _ = site
    full = get(url, "/api/v1/search", q="a photo", k=4).json()
    assert full["next_offset"] == 4
    assert get(url, "/api/v1/search", q="a photo", k=4, offset=4).json()["next_offset"] is None  # 8 images: no
    # third, empty page
    for params in ({"sort": "date"}, {"mode": "hybrid", "q": "photo jpg"}, {"mode": "hybrid", "sort": "date"}):
        seen, offset = [], 0
        while offset is not None:
            page = get(url, "/api/v1/search", **{"q": "a photo", "k": 3, "offset": offset, **params}).json()
            seen += [Path(h["path"]).name for h in page["hits"]]
            offset = page["next_offset"]
        assert sorted(seen) == sorted(set(seen)) and len(seen) == 8, (params, seen)
        if params.get("sort") == "date":
            assert seen[:2] == ["pixel_may.jpg", "canon_jan.jpg"]  # newest first across pages, undated last
    assert_error(get(url, "/api/v1/search", q="x", sort="date", k=1000, offset=1), 422, "1000")
    assert_error(get(url, "/api/v1/search", q="x", mode="hybrid", k=500, offset=501), 422, "1000")
    # Fusion is done at one depth for every page: with a window of 4, pages of 2 are the top 4 of a single query.
    import vlsearch.api.routers.search
    import vlsearch.search.engine

    monkeypatch.setattr(vlsearch.search.engine, "FUSION_DEPTH", 4)
    monkeypatch.setattr(vlsearch.api.routers.search, "FUSION_DEPTH", 4)
    one = [h["id"] for h in get(url, "/api/v1/search", q="photo jpg", mode="hybrid", k=4).json()["hits"]]
    first = get(url, "/api/v1/search", q="photo jpg", mode="hybrid", k=2).json()
    second = get(url, "/api/v1/search", q="photo jpg", mode="hybrid", k=2, offset=2).json()
    assert [h["id"] for h in first["hits"] + second["hits"]] == one and second["next_offset"] is None


def test_search_filters_by_camera_date_and_folder(site):
    url, photos, _ = site
    cams = get(url, "/api/v1/search", q="x", camera="pixel").json()["hits"]
    assert [Path(h["path"]).name for h in cams] == ["pixel_may.jpg"]
    dated = get(url, "/api/v1/search", q="x", after="2024-01-01", before="2025-01-01").json()["hits"]
    assert [Path(h["path"]).name for h in dated] == ["pixel_may.jpg"]
    assert get(url, "/api/v1/search", q="x", path=str(photos.parent / "elsewhere")).json()["hits"] == []
    assert len(get(url, "/api/v1/search", q="x", path=str(photos)).json()["hits"]) == 8
    for wildcard in ("_", "%", "Pi_el", "%8"):  # characters, not SQL wildcards
        assert get(url, "/api/v1/search", q="x", camera=wildcard).json()["hits"] == [], wildcard
    by_date = get(url, "/api/v1/search", q="x", sort="date", camera="o").json()["hits"]  # Google and Canon
    assert [Path(h["path"]).name for h in by_date] == ["pixel_may.jpg", "canon_jan.jpg"]


def test_negative_terms_change_the_ranking(site):
    """A not-term pushes down the images that match it: with `not`, images rank by their score for the query less
    half (the default negative weight) their scores for the not-terms (all vectors are unit length), so one overtakes
    another only when the other matches the not-terms more."""
    url, _, _ = site

    def scores(q: str, *negatives: str) -> dict[int, float]:
        params = [("q", q), ("k", 1000), *(("not", n) for n in negatives)]
        hits = httpx.get(url + "/api/v1/search", params=params, timeout=60).json()["hits"]
        return {h["id"]: h["score"] for h in hits}

    plain, pushed = scores("red shapes"), scores("red shapes", "blue", "circles")
    blue, circles = scores("blue"), scores("circles")
    against = {i: blue[i] + circles[i] for i in plain}  # how much each image matches the not-terms
    penalised = {i: plain[i] - 0.5 * against[i] for i in plain}
    assert set(pushed) == set(plain)
    pairs = [(a, b) for a in plain for b in plain if penalised[a] > penalised[b] + 1e-4]
    assert [(a, b) for a, b in pairs if pushed[a] <= pushed[b]] == []  # the order of penalised, not of plain
    overtaken = [(a, b) for a in plain for b in plain if plain[a] > plain[b] and pushed[a] < pushed[b]]
    assert overtaken, "the not-terms changed no image's place"
    assert all(against[a] > against[b] for a, b in overtaken), overtaken


def test_search_errors_say_what_to_change(site):
    url, _, _ = site
    assert_error(get(url, "/api/v1/search", q="x", k=1001), 422, "k", "1000")
    assert_error(get(url, "/api/v1/search", q="x", k=0), 422, "k")
    assert_error(get(url, "/api/v1/search", q="x", offset=-1), 422, "offset")
    assert_error(get(url, "/api/v1/search", q="x", k=1000, offset=9500), 422, "10000")
    assert_error(get(url, "/api/v1/search", q="   "), 422, "blank")
    assert_error(get(url, "/api/v1/search"), 422, "q")
    assert_error(get(url, "/api/v1/search", q="x", mode="fuzzy"), 422, "mode")
    assert_error(get(url, "/api/v1/search", q="x", after="yesterday"), 422, "after")
    assert_error(get(url, "/api/v1/search", q="x", after="2024-02-01", before="2024-01-01"), 422, "earlier")
    # A zoned and a zone-less date compare by wall-clock time (as photos are stored), not with a 500.
    mixed = get(url, "/api/v1/search", q="x", after="2024-01-01T00:00:00+05:00", before="2025-01-01")
    assert [Path(h["path"]).name for h in mixed.json()["hits"]] == ["pixel_may.jpg"]
    assert_error(get(url, "/api/v1/search", q="x", after="2024-02-01T00:00:00Z", before="2024-01-01"), 422, "earlier")
    assert_error(get(url, "/api/v1/search", q="x", min_score="nan"), 422, "min_score")
    assert_error(get(url, "/api/v1/search", q="x", path="relative/dir"), 422, "absolute")
    assert_error(get(url, "/api/v1/search", q="x", mode="keyword", min_score=0.2), 422, "keyword")
    assert get(url, "/api/v1/search", q="x", rerank=3, k=3).status_code == 200


@pytest.mark.parametrize("q", ['"unbalanced', "NOT", "a AND OR", "col:umn*", "' OR 1=1 --", "😀 ünïcödé", "\x00x"])
def test_keyword_syntax_and_strange_text_never_break_search(site, q):
    url, _, _ = site
    for mode in ("keyword", "hybrid", "vector"):
        r = get(url, "/api/v1/search", q=q, mode=mode)
        assert r.status_code in (200, 422), r.text
        if "\x00" in q:
            assert_error(r, 422, "NUL")


def test_post_search_combines_text_an_indexed_image_and_an_uploaded_one(site):
    url, _, _ = site
    like_1 = httpx.post(url + "/api/v1/search", json={"image_id": 1, "k": 3}).json()
    assert 1 not in [h["id"] for h in like_1["hits"]] and len(like_1["hits"]) == 3
    b64 = base64.b64encode(jpeg(1, (96, 72))).decode()
    uploaded = httpx.post(url + "/api/v1/search", json={"image": b64, "k": 8}).json()
    assert uploaded["hits"][0]["path"].endswith("photo_0001.jpg")  # the same picture, re-encoded
    data_url = httpx.post(url + "/api/v1/search", json={"image": "data:image/jpeg;base64," + b64, "k": 1}).json()
    assert data_url["hits"][0]["id"] == uploaded["hits"][0]["id"]
    raw = jpeg(1, (96, 72))
    variants = [base64.encodebytes(raw).decode(),  # MIME: wrapped at 76 columns
                base64.urlsafe_b64encode(raw).decode().rstrip("=")]  # URL-safe, unpadded (as JWT-style tools send)
    assert "\n" in variants[0] and ("-" in variants[1] or "_" in variants[1])
    for variant in variants:
        again = httpx.post(url + "/api/v1/search", json={"image": variant, "k": 1})
        assert again.status_code == 200 and again.json()["hits"][0]["id"] == uploaded["hits"][0]["id"], again.text
    both = httpx.post(url + "/api/v1/search", json={"text": "shapes", "image_id": 1, "image_weight": 2,
                                                      "negatives": ["dark"], "k": 3, "filters": {"camera": "o"}})
    assert both.status_code == 200 and {Path(h["path"]).name for h in both.json()["hits"]} <= {
        "pixel_may.jpg", "canon_jan.jpg"}


def test_post_search_errors(site):
    url, _, _ = site
    post = lambda body: httpx.post(url + "/api/v1/search", json=body)  # noqa: E731
    assert_error(post({}), 422, "text, an image")
    assert_error(post({"image_id": 999}), 404, "999")
    assert_error(post({"image": "not base64!"}), 422, "base64")
    assert_error(post({"image": base64.b64encode(b"hello").decode()}), 415, "image")
    assert_error(post({"image": base64.b64encode(png_bomb(4000, 4000)).decode()}), 413, "megapixels")
    assert_error(post({"text": "x", "text_weight": 0}), 422, "cancel out")
    assert_error(post({"text": "x", "surprise": 1}), 422, "surprise")
    assert_error(post({"text": "x", "mode": "keyword", "image_id": 1}), 422, "keyword")
    r = httpx.post(url + "/api/v1/search", content=b'{"text": "\\ud800"}', headers={"content-type": "application/json"})
    assert_error(r, 422, "surrogate")
    r = httpx.post(url + "/api/v1/search", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 422, "JSON")


def test_reverse_image_search_by_upload(site):
    url, _, _ = site
    r = httpx.post(url + "/api/v1/search/image", files={"file": ("q.jpg", jpeg(2, (96, 72)), "image/jpeg")},
                   data={"k": "2"})
    assert r.status_code == 200 and r.json()["hits"][0]["path"].endswith("photo_0002.jpg")
    steered = httpx.post(url + "/api/v1/search/image", files={"file": ("q.jpg", jpeg(2), "image/jpeg")},
                         data={"text": "circles", "text_weight": "3", "k": "8"})
    assert steered.status_code == 200 and len(steered.json()["hits"]) == 8
    assert_error(httpx.post(url + "/api/v1/search/image", files={"file": ("a.jpg", b"<html>", "image/jpeg")}),
                 415, "a.jpg")
    assert_error(httpx.post(url + "/api/v1/search/image", files={"file": ("e.jpg", b"", "image/jpeg")}), 415,
                 "empty")
    big = httpx.post(url + "/api/v1/search/image", files={"file": ("big.jpg", b"\xff" * 400_000, "image/jpeg")})
    assert_error(big, 413, "big.jpg", "MB")
    assert_error(httpx.post(url + "/api/v1/search/image"), 422, "file")


def test_similar_images(site):
    url, _, _ = site
    r = get(url, "/api/v1/images/3/similar", k=4).json()
    assert len(r["hits"]) == 4 and 3 not in [h["id"] for h in r["hits"]]
    assert_error(get(url, "/api/v1/images/999/similar"), 404, "999")
    assert_error(get(url, "/api/v1/images/abc/similar"), 422, "image_id")


def test_request_bodies_over_the_limit_are_refused_before_reading(site):
    url, _, _ = site
    declared = httpx.post(url + "/api/v1/search", content=b"x" * 1_200_000,
                          headers={"content-type": "application/json"})
    assert_error(declared, 413, "MB")

    def chunks():
        for _ in range(12):
            yield b"x" * 100_000

    streamed = httpx.post(url + "/api/v1/search", content=chunks(), headers={"content-type": "application/json"})
    assert_error(streamed, 413, "MB")


# -- images ---------------------------------------------------------------------------------------


def test_image_detail_thumbnail_and_file(site):
    url, photos, _ = site
    hit = next(h for h in get(url, "/api/v1/search", q="x", camera="pixel").json()["hits"])
    d = get(url, f"/api/v1/images/{hit['id']}").json()
    assert d["path"] == str(photos / "pixel_may.jpg") and d["status"] == "ok" and d["format"] == "JPEG"
    assert d["camera_make"] == "Google" and d["models"] == ["tiny-random"]
    # The camera's wall clock has no zone and is sent without one; times the program recorded are UTC and say so
    # (RFC 3339 needs the offset; the CI schemathesis run caught these going out without it).
    assert d["taken_at"] == "2024-05-03T00:00:00" and hit["taken_at"] == d["taken_at"]
    indexed = datetime.fromisoformat(d["indexed_at"])
    assert indexed.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - indexed) < timedelta(hours=1)
    thumb = httpx.get(url + d["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    original = httpx.get(url + d["file_url"])
    assert original.status_code == 200 and original.content == (photos / "pixel_may.jpg").read_bytes()
    assert original.headers["content-type"] == "image/jpeg" and original.headers["x-content-type-options"] == "nosniff"
    for endpoint, body in ((d["thumbnail_url"], thumb.content), (d["file_url"], original.content)):
        head = httpx.head(url + endpoint)  # what caches and link checkers send
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(body)
    assert httpx.head(url + "/api/v1/images/999/file").status_code == 404
    for path in ("/api/v1/images/999", "/api/v1/images/999/thumbnail", "/api/v1/images/999/file"):
        assert_error(httpx.get(url + path), 404, "999")


def test_file_names_with_quotes_newlines_and_accents_reach_the_client_intact(tmp_path, tiny_encoder):
    from urllib.parse import unquote

    photos = tmp_path / "photos"
    names = ['say "cheese".jpg', "two\nlines.jpg", "café ☕.jpg", "plain.jpg"]
    for i, name in enumerate(names):
        write_photo(photos / name, i)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([photos])
    with serving(make_app(lib, tiny_encoder)) as url:
        for hit in get(url, "/api/v1/search", q="x").json()["hits"]:
            r = httpx.get(url + hit["file_url"])
            assert r.status_code == 200 and r.content == Path(hit["path"]).read_bytes()
            disposition = r.headers["content-disposition"]
            assert "\n" not in disposition and disposition.startswith("inline;")
            name = Path(hit["path"]).name
            if name == "plain.jpg":
                assert disposition == 'inline; filename="plain.jpg"'
            else:
                assert unquote(disposition.split("filename*=utf-8''")[1]) == name


@pytest.mark.parametrize("path", [
    "/api/v1/images/../../../../etc/passwd/file", "/api/v1/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
    "/api/v1/images/1%2f..%2f..%2fetc%2fpasswd/file", "/api/v1/images/-1/file",
    "/api/v1/images/1/file?path=/etc/passwd", "/api/v1/images/1e3/file", "/api/v1/images/99999999999999999999999/file",
])
def test_file_endpoint_takes_no_path_from_the_client(site, path):
    url, photos, _ = site
    r = httpx.get(url + path)
    assert b"root:" not in r.content
    if r.status_code == 200:  # only the indexed image 1 itself, whatever extra the URL carried
        assert r.content == Path(httpx.get(url + "/api/v1/images/1").json()["path"]).read_bytes()
    else:
        assert r.status_code in (404, 422), r.text


def test_file_that_now_points_outside_the_indexed_folders_is_not_served(tmp_path, tiny_encoder):
    photos = tmp_path / "photos"
    write_photos(photos, 2)
    secret = write_photo(tmp_path / "private" / "secret.jpg", 9)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([photos])
    (photos / "photo_0001.jpg").unlink()
    (photos / "photo_0001.jpg").symlink_to(secret)  # swapped for a link out of the folder after indexing
    with serving(make_app(lib, tiny_encoder)) as url:
        assert httpx.get(url + "/api/v1/images/1/file").status_code == 200
        assert_error(httpx.get(url + "/api/v1/images/2/file"), 404, "outside the indexed folders")


def test_delete_removes_the_image_from_sqlite_and_faiss(tmp_path, tiny_encoder):
    photos = tmp_path / "photos"
    write_photos(photos, 4)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([photos])
    with serving(make_app(lib, tiny_encoder, api_keys=[KEY], index_lag_s=0)) as url:
        assert_error(httpx.delete(url + "/api/v1/images/2"), 401, "Authorization: Bearer")
        assert_error(httpx.delete(url + "/api/v1/images/2", headers={"Authorization": "Bearer wrong"}), 401,
                     "not one")
        r = httpx.delete(url + "/api/v1/images/2", headers=AUTH)
        assert r.status_code == 200 and r.json()["path"].endswith("photo_0001.jpg")
        assert_error(httpx.delete(url + "/api/v1/images/2", headers=AUTH), 404, "2")
        assert_error(httpx.get(url + "/api/v1/images/2"), 404)
        hits = httpx.get(url + "/api/v1/search", params={"q": "x"}).json()["hits"]
        assert sorted(h["id"] for h in hits) == [1, 3, 4]
    check = Library.open(tmp_path / "lib")
    index = check.vector_index("tiny-random")
    assert sorted(index.ids().tolist()) == [1, 3, 4]
    assert (photos / "photo_0001.jpg").exists()  # the file itself is untouched


def test_many_images_are_deleted_in_one_request(tmp_path, tiny_encoder):
    photos = tmp_path / "photos"
    write_photos(photos, 6)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([photos])
    saved = (lib.index_path("tiny-random")).stat().st_mtime_ns
    with serving(make_app(lib, tiny_encoder, api_keys=[KEY], index_lag_s=0)) as url:
        endpoint = url + "/api/v1/images/delete"
        assert_error(httpx.post(endpoint, json={"ids": [1]}), 401, "Bearer")
        r = httpx.post(endpoint, json={"ids": [5, 2, 99, 2, 4]}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert [d["id"] for d in r.json()["deleted"]] == [5, 2, 4] and r.json()["missing"] == [99]
        assert r.json()["deleted"][0]["path"].endswith("photo_0004.jpg")
        again = httpx.post(endpoint, json={"ids": [5, 2]}, headers=AUTH).json()  # a retry is harmless
        assert again == {"deleted": [], "missing": [5, 2]}
        hits = httpx.get(url + "/api/v1/search", params={"q": "x"}).json()["hits"]
        assert sorted(h["id"] for h in hits) == [1, 3, 6]
        assert_error(httpx.post(endpoint, json={"ids": []}, headers=AUTH), 422, "ids")
        assert_error(httpx.post(endpoint, json={"ids": list(range(1, 1002))}, headers=AUTH), 422, "1000")
        assert_error(httpx.post(endpoint, json={"ids": [0]}, headers=AUTH), 422, "ids")
    check = Library.open(tmp_path / "lib")
    assert sorted(check.vector_index("tiny-random").ids().tolist()) == [1, 3, 6]
    assert check.index_path("tiny-random").stat().st_mtime_ns != saved


def test_concurrent_deletes_report_each_image_once_and_keep_faiss_in_step(tmp_path, tiny_encoder):
    from concurrent.futures import ThreadPoolExecutor

    write_photos(tmp_path / "photos", 12)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with serving(make_app(lib, tiny_encoder, api_keys=[KEY], index_lag_s=0)) as url, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: httpx.post(url + "/api/v1/images/delete", json={"ids": [12, i]},
                                                     headers=AUTH, timeout=60).json(), range(1, 9)))
        left = sorted(h["id"] for h in httpx.get(url + "/api/v1/search", params={"q": "x"}).json()["hits"])
    reported = [d["id"] for a in answers for d in a["deleted"]]
    assert sorted(reported) == list(range(1, 9)) + [12]  # 12 was in every request and is reported by one
    assert sum(12 in a["missing"] for a in answers) == 7
    assert left == [9, 10, 11]
    assert sorted(Library.open(tmp_path / "lib").vector_index("tiny-random").ids().tolist()) == [9, 10, 11]


def test_mutating_endpoints_are_refused_when_no_key_is_configured(tmp_path, tiny_encoder):
    write_photos(tmp_path / "photos", 1)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with serving(make_app(lib, tiny_encoder)) as url:
        assert_error(httpx.delete(url + "/api/v1/images/1", headers=AUTH), 403, "VLSEARCH_API_KEYS")
        assert_error(httpx.post(url + "/api/v1/index", json={"paths": [str(tmp_path)]}), 403, "VLSEARCH_API_KEYS")
        assert httpx.get(url + "/api/v1/search", params={"q": "x"}).status_code == 200


def test_auth_reads_closes_every_endpoint_but_healthz(tmp_path, tiny_encoder):
    write_photos(tmp_path / "photos", 1)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with serving(make_app(lib, tiny_encoder, api_keys=[KEY, "second-key"], auth_reads=True)) as url:
        for path in ("/api/v1/search?q=x", "/api/v1/images/1", "/api/v1/images/1/thumbnail", "/api/v1/images/1/file",
                     "/api/v1/stats", "/api/v1/metrics", "/api/v1/jobs", "/api/v1/images/1/similar"):
            assert_error(httpx.get(url + path), 401, "Bearer")
            assert httpx.get(url + path, headers=AUTH).status_code == 200, path
            assert httpx.get(url + path, headers={"Authorization": "Bearer second-key"}).status_code == 200
        assert_error(httpx.post(url + "/api/v1/caption", files={"file": ("a.jpg", jpeg(), "image/jpeg")}), 401)
        assert httpx.get(url + "/api/v1/healthz").status_code == 200


def test_api_keys_are_compared_in_constant_time_against_every_key():
    from vlsearch.api.security import key_matches

    assert key_matches("b", ["a", "b"]) and not key_matches("c", ["a", "b"]) and not key_matches("", ["a"])
    assert not key_matches("\udcff", ["a"])  # odd bytes in a header never raise


# -- captions and questions -----------------------------------------------------------------------


def test_caption_upload_or_indexed_image(site):
    url, _, _ = site
    up = httpx.post(url + "/api/v1/caption", files={"file": ("a.jpg", jpeg(), "image/jpeg")},
                    data={"prompt": "a photo of"})
    assert up.status_code == 200 and up.json()["caption"].startswith("a photo of")
    assert up.json()["model"] == "tiny-random" and up.json()["stored"] is False
    by_id = httpx.post(url + "/api/v1/caption", data={"image_id": "2"})
    assert by_id.status_code == 200 and by_id.json()["image_id"] == 2 and by_id.json()["caption"]
    assert_error(httpx.post(url + "/api/v1/caption"), 422, "either")
    assert_error(httpx.post(url + "/api/v1/caption", data={"image_id": "999"}), 404, "999")
    assert_error(httpx.post(url + "/api/v1/caption", files={"file": ("n.png", b"\x89PNG\r\n", "image/png")}), 415,
                 "n.png")


def test_stored_caption_is_returned_as_stored(tmp_path, tiny_encoder, tiny_models):
    from vlsearch.indexer.describe import Describer

    write_photos(tmp_path / "photos", 2)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    Describer(lib, tiny_models["captioner"], None, workers=0).run()
    with serving(make_app(lib, tiny_encoder, **tiny_models)) as url:
        r = httpx.post(url + "/api/v1/caption", data={"image_id": "1"}).json()
        detail = httpx.get(url + "/api/v1/images/1").json()
        assert r["stored"] is True and r["caption"] == detail["caption"] == detail["captions"][0]["text"]


def test_batch_captions_keep_order_and_report_each_failure(site):
    url, _, _ = site
    files = [("files", ("a.jpg", jpeg(1), "image/jpeg")), ("files", ("bad.jpg", b"nope", "image/jpeg")),
             ("files", ("c.jpg", jpeg(3), "image/jpeg"))]
    r = httpx.post(url + "/api/v1/caption/batch", files=files, data={"image_ids": ["1", "999"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 1, 2, 3, 4]
    assert results[0]["caption"] and results[2]["caption"] and results[3]["caption"]
    assert results[1]["error"] == "unsupported_media_type" and "bad.jpg" in results[1]["detail"]
    assert results[4]["error"] == "not_found" and results[4]["image_id"] == 999
    many = [("files", (f"{i}.jpg", jpeg(i), "image/jpeg")) for i in range(33)]
    assert_error(httpx.post(url + "/api/v1/caption/batch", files=many), 413, "at most 32")
    assert_error(httpx.post(url + "/api/v1/caption/batch"), 422)


def test_vqa_and_ask(site):
    url, _, _ = site
    r = httpx.post(url + "/api/v1/vqa", files={"file": ("a.jpg", jpeg(), "image/jpeg")},
                   data={"question": "what colour is it?"})
    assert r.status_code == 200 and r.json()["model"] == "tiny-random" and isinstance(r.json()["answer"], str)
    assert httpx.post(url + "/api/v1/vqa", data={"image_id": "1", "question": "what is it?"}).status_code == 200
    assert_error(httpx.post(url + "/api/v1/vqa", data={"image_id": "1", "question": "???"}), 422, "no words")
    assert_error(httpx.post(url + "/api/v1/vqa", data={"image_id": "1"}), 422, "question")
    ask = httpx.post(url + "/api/v1/ask", json={"question": "which photos show red shapes?", "threshold": 0,
                                                "k": 3, "candidates": 5})
    assert ask.status_code == 200, ask.text
    body = ask.json()
    assert body["retrieval_query"] == "red shapes" and body["method"] == "vqa" and len(body["results"]) == 3
    assert all(0 <= f["answer_score"] <= 1 for f in body["results"])
    assert_error(httpx.post(url + "/api/v1/ask", json={"question": "which photos show?"}), 422, "not what")
    assert_error(httpx.post(url + "/api/v1/ask", json={"question": "x", "k": 0}), 422, "k")


def test_offline_vqa_refuses_questions_it_cannot_ground(tmp_path, tiny_encoder):
    from vlsearch.captioner.offline import OfflineCaptioner

    write_photos(tmp_path / "photos", 1)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with serving(make_app(lib, tiny_encoder, answerer=OfflineCaptioner("cpu"))) as url:
        r = httpx.post(url + "/api/v1/vqa", data={"image_id": "1", "question": "is the dog happy?"})
        assert_error(r, 422, "blip-vqa-base")
        assert r.json()["error"] == "unanswerable"


# -- index jobs -----------------------------------------------------------------------------------


def wait_for(url: str, job_url: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(url + job_url).json()
        if job["state"] != "running":
            return job
        time.sleep(0.1)
    raise AssertionError(f"job still running after {timeout}s: {job}")


def test_index_job_refuses_paths_outside_the_allowed_roots(site):
    url, photos, _ = site
    post = lambda paths, **kw: httpx.post(url + "/api/v1/index", json={"paths": paths}, **kw)  # noqa: E731
    assert_error(post([str(photos)]), 401, "Bearer")
    assert_error(post(["/etc"], headers=AUTH), 403, "outside")
    assert_error(post([str(photos / ".." / ".." / "..")], headers=AUTH), 403, "outside")
    assert_error(post(["relative/path"], headers=AUTH), 422, "absolute")
    assert_error(post([str(photos / "nope")], headers=AUTH), 404, "no such")
    assert_error(post([], headers=AUTH), 422, "paths")
    link = photos.parent / "escape"
    if not link.exists():
        link.symlink_to("/etc")
    assert_error(post([str(link)], headers=AUTH), 403, "outside")
    assert_error(httpx.get(url + "/api/v1/jobs/12345"), 404, "12345")


def test_index_job_runs_beside_concurrent_searches_and_a_second_is_refused(tmp_path, tiny_encoder):
    allowed = tmp_path / "allowed"
    write_photos(allowed / "old", 4)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([allowed / "old"])
    write_photos(allowed / "new", 60, start=100)
    (allowed / "new" / "broken.jpg").write_bytes(b"not a picture")
    app = make_app(lib, tiny_encoder, api_keys=[KEY], index_roots=[allowed], index_lag_s=0)
    with serving(app) as url:
        started = httpx.post(url + "/api/v1/index", json={"paths": [str(allowed / "new")], "captions": False},
                             headers=AUTH)
        assert started.status_code == 202, started.text
        job = started.json()
        second = httpx.post(url + "/api/v1/index", json={"paths": [str(allowed / "old")]}, headers=AUTH)
        assert_error(second, 409, f"job {job['id']}")
        statuses, counts, stop = [], [], threading.Event()

        def searcher():
            with httpx.Client(base_url=url, timeout=60) as client:
                while not stop.is_set():
                    r = client.get("/api/v1/search", params={"q": "shapes", "k": 100})
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        hits = r.json()["hits"]
                        counts.append(len(hits))
                        assert all(Path(h["path"]).exists() for h in hits)

        threads = [threading.Thread(target=searcher) for _ in range(8)]
        for t in threads:
            t.start()
        done = wait_for(url, job["url"])
        stop.set()
        for t in threads:
            t.join(60)
        assert done["state"] == "succeeded", done
        assert done["summary"]["embedded"] == 60 and done["summary"]["errors"] == 1 and done["errors"] == 1
        assert done["failures"][0][0].endswith("broken.jpg")
        assert statuses and set(statuses) == {200}, set(statuses)
        assert all(4 <= c <= 64 for c in counts)  # never fewer than the old images, never a duplicate
        final = httpx.get(url + "/api/v1/search", params={"q": "shapes", "k": 100}).json()["hits"]
        assert len(final) == 64
        assert httpx.get(url + "/api/v1/jobs").json()[0]["id"] == job["id"]
        metrics = httpx.get(url + "/api/v1/metrics").text
        assert "vlsearch_images_indexed_total 60.0" in metrics and "vlsearch_index_errors_total 1.0" in metrics


def test_index_job_is_refused_while_another_process_indexes(tmp_path, tiny_encoder):
    allowed = tmp_path / "allowed"
    write_photos(allowed, 1)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([allowed])
    with serving(make_app(lib, tiny_encoder, api_keys=[KEY], index_roots=[allowed])) as url:
        other = Library.open(tmp_path / "lib")
        with other.writer("`vlsearch index`"):
            r = httpx.post(url + "/api/v1/index", json={"paths": [str(allowed)]}, headers=AUTH)
            assert_error(r, 409, "`vlsearch index`")
        r = httpx.post(url + "/api/v1/index", json={"paths": [str(allowed)]}, headers=AUTH)
        assert r.status_code == 202 and wait_for(url, r.json()["url"])["state"] == "succeeded"


def test_an_empty_library_answers_with_no_hits_until_a_job_fills_it(tmp_path, tiny_encoder, monkeypatch):
    import vlsearch.api.jobs

    trims = []  # the job hands its freed buffers back to the system once it ends (api/memory.py)
    monkeypatch.setattr(vlsearch.api.jobs, "return_free_memory", lambda: trims.append(True))
    allowed = tmp_path / "allowed"
    write_photos(allowed, 3)
    lib = Library.open(tmp_path / "lib")
    with serving(make_app(lib, tiny_encoder, api_keys=[KEY], index_roots=[allowed], index_lag_s=0)) as url:
        assert httpx.get(url + "/api/v1/search", params={"q": "x"}).json()["hits"] == []
        r = httpx.post(url + "/api/v1/index", json={"paths": [str(allowed)], "ocr": False}, headers=AUTH)
        assert wait_for(url, r.json()["url"])["state"] == "succeeded"
        assert len(httpx.get(url + "/api/v1/search", params={"q": "x"}).json()["hits"]) == 3
    deadline = time.monotonic() + 30  # the job's thread trims just after it marks the job finished
    while not trims and time.monotonic() < deadline:
        time.sleep(0.01)
    assert trims == [True]


def test_an_index_job_does_not_follow_file_links_out_of_the_allowed_folders(tmp_path, tiny_encoder):
    allowed = tmp_path / "allowed"
    write_photos(allowed, 2)
    secret = write_photo(tmp_path / "private" / "secret.jpg", 9)
    (allowed / "innocent.jpg").symlink_to(secret)  # a link out: its content must not reach thumbnails or captions
    (allowed / "alias.jpg").symlink_to(allowed / "photo_0000.jpg")  # a link that stays inside is fine
    lib = Library.open(tmp_path / "lib")
    with serving(make_app(lib, tiny_encoder, api_keys=[KEY], index_roots=[allowed], index_lag_s=0)) as url:
        r = httpx.post(url + "/api/v1/index", json={"paths": [str(allowed)], "ocr": False}, headers=AUTH)
        job = wait_for(url, r.json()["url"])
        assert job["state"] == "succeeded" and job["errors"] == 1 and job["summary"]["errors"] == 1
        assert job["failures"] == [[str(allowed / "innocent.jpg"),
                                    "a symlink to a file outside the folders this server may index"]]
        indexed = {Path(h["path"]).name for h in httpx.get(url + "/api/v1/search", params={"q": "x"}).json()["hits"]}
        assert indexed == {"photo_0000.jpg", "photo_0001.jpg", "alias.jpg"}
        finished = httpx.get(url + r.json()["url"]).json()
        assert finished["images_per_second"] == job["images_per_second"]  # frozen once the job ends
    Indexer(lib, tiny_encoder, workers=0).run([allowed])  # the CLI, run by the owner, follows the link as before
    assert lib.stats().images == 4


def test_a_failed_job_says_what_failed(tmp_path, tiny_encoder, monkeypatch):
    import vlsearch.api.jobs

    allowed = tmp_path / "allowed"
    write_photos(allowed, 1)
    lib = Library.open(tmp_path / "lib")
    errors = iter([RuntimeError(""), KeyError("model"), OSError(28, "No space left on device")])

    class Failing:
        def __init__(self, *args, **kwargs):
            pass

        def run(self, paths):
            raise next(errors)

    monkeypatch.setattr(vlsearch.api.jobs, "Indexer", Failing)
    with serving(make_app(lib, tiny_encoder, api_keys=[KEY], index_roots=[allowed])) as url:
        said = []
        for _ in range(3):
            r = httpx.post(url + "/api/v1/index", json={"paths": [str(allowed)]}, headers=AUTH)
            job = wait_for(url, r.json()["url"])
            assert job["state"] == "failed" and job["finished_at"] is not None
            said.append(job["error"])
        assert said == ["RuntimeError", "KeyError: 'model'", "OSError: [Errno 28] No space left on device"]
        assert httpx.post(url + "/api/v1/index", json={"paths": [str(allowed)]}, headers=AUTH).status_code == 202


# -- the service ----------------------------------------------------------------------------------


def test_stats_healthz_and_metrics(site):
    url, _, _ = site
    get(url, "/api/v1/search", q="warm up")
    stats = get(url, "/api/v1/stats").json()
    assert stats["images"] == 8 and stats["models"][0] == {"name": "tiny-random", "dim": stats["models"][0]["dim"],
                                                           "vectors": 8}
    assert stats["loaded"]["embedding"] == "tiny-random" and stats["loaded"]["caption"] == "tiny-random"
    assert get(url, "/api/v1/healthz").json() == {"status": "ok", "model": "tiny-random"}
    metrics = httpx.get(url + "/api/v1/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'vlsearch_http_requests_total{method="GET",route="/api/v1/search",status="200"}' in text
    assert 'vlsearch_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/v1/search"}' in text
    assert 'vlsearch_library_images{status="ok"} 8.0' in text and "vlsearch_text_batch_size_count" in text
    httpx.get(url + "/api/v1/images/12345")
    assert 'route="/api/v1/images/{image_id}",status="404"' in httpx.get(url + "/api/v1/metrics").text
    httpx.get(url + "/openapi.json")
    httpx.post(url + "/api/v1/search", content=b"{" + b" " * 2_000_000 + b"}",
               headers={"content-type": "application/json"})  # refused by the body limit, before routing
    text = httpx.get(url + "/api/v1/metrics").text
    assert 'method="GET",route="/openapi.json",status="200"' in text
    assert 'method="POST",route="/api/v1/search",status="413"' in text
    httpx.post(url + "/api/v1/images/delete", content=b"{" + b" " * 2_000_000 + b"}",
               headers={"content-type": "application/json", **AUTH})
    assert 'method="POST",route="/api/v1/images/delete",status="413"' in httpx.get(url + "/api/v1/metrics").text
    for made_up in ("FOO", "BAR", "X" * 50):
        httpx.request(made_up, url + "/api/v1/stats")
    text = httpx.get(url + "/api/v1/metrics").text
    assert 'method="OTHER",route="/api/v1/stats",status="405"' in text and "FOO" not in text and "XXX" not in text


def test_unknown_paths_and_methods_get_json_errors(site):
    url, _, _ = site
    assert_error(httpx.get(url + "/api/v1/nothing"), 404, "/api/v1")
    assert_error(httpx.put(url + "/api/v1/search"), 405, "does not take PUT, only GET, HEAD, POST")
    docs = httpx.get(url + "/openapi.json").json()
    assert "/api/v1/search/image" in docs["paths"] and "/api/v1/jobs/{job_id}" in docs["paths"]
    assert httpx.get(url + "/docs").status_code == 200


def test_cors_is_off_by_default_and_configurable(tmp_path, tiny_encoder):
    lib = Library.open(tmp_path / "lib")
    origin = {"Origin": "http://shop.example", "Access-Control-Request-Method": "GET"}
    with serving(make_app(lib, tiny_encoder)) as url:
        r = httpx.options(url + "/api/v1/search", headers=origin)
        assert "access-control-allow-origin" not in r.headers
    with serving(make_app(lib, tiny_encoder, cors_origins=["http://shop.example"])) as url:
        r = httpx.options(url + "/api/v1/search", headers=origin)
        assert r.headers["access-control-allow-origin"] == "http://shop.example"


def test_concurrent_text_queries_share_encoder_calls(tmp_path, tiny_encoder):
    from concurrent.futures import ThreadPoolExecutor

    write_photos(tmp_path / "photos", 3)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    calls: list[int] = []
    inner = tiny_encoder.encode_texts

    class Counting:
        def __getattr__(self, name):
            return getattr(tiny_encoder, name)

        def encode_texts(self, texts):
            calls.append(len(texts))
            time.sleep(0.05)  # a slow model: requests pile up behind it
            return inner(texts)

    counting = Counting()
    from vlsearch.api.service import Models, Service
    from vlsearch.api.settings import Settings

    service = Service(lib, Models(encoder=counting), Settings(library=lib.root, batch_wait_ms=5))
    from vlsearch.api.app import create_app

    with serving(create_app(service)) as url, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: httpx.get(url + "/api/v1/search", params={"q": f"query {i}"}, timeout=60),
                                range(32)))
    assert all(r.status_code == 200 for r in answers)
    queries = [r.json()["hits"][0]["id"] for r in answers]
    alone = [lib_search_top(lib, tiny_encoder, f"query {i}") for i in range(32)]
    assert queries == alone  # batching changes nothing but the number of calls
    assert sum(calls) == 32 and len(calls) < 32 and max(calls) > 1


def lib_search_top(lib, encoder, text):
    from vlsearch.search import SearchEngine, SearchQuery

    return SearchEngine(lib, encoder).search(SearchQuery(text=text, k=1))[0].id


def test_settings_from_environment_and_toml(tmp_path, monkeypatch):
    from vlsearch.api.settings import SettingsError, load_settings

    config = tmp_path / "vlsearch.toml"
    config.write_text('port = 9100\napi_keys = ["from-file"]\nindex_roots = ["/srv/photos"]\nmax_upload_bytes = 5\n')
    monkeypatch.setenv("VLSEARCH_API_KEYS", "k1, k2")
    monkeypatch.setenv("VLSEARCH_CORS_ORIGINS", "http://a.example,http://b.example")
    s = load_settings(config, host="0.0.0.0")
    assert (s.port, s.host, s.max_upload_bytes, s.index_roots) == (9100, "0.0.0.0", 5, [Path("/srv/photos")])
    assert [k.get_secret_value() for k in s.api_keys] == ["k1", "k2"]  # the environment beats the file
    assert s.cors_origins == ["http://a.example", "http://b.example"]
    assert "k1" not in repr(s) and "k1" not in str(s)  # keys never show up in logs
    typo = tmp_path / "typo.toml"
    typo.write_text("max_uplod_bytes = 5\n")  # a misspelt setting is an error, not silently ignored
    with pytest.raises(SettingsError, match="max_uplod_bytes"):
        load_settings(typo)
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "missing.toml")
    monkeypatch.setenv("VLSEARCH_PORT", "eighty")
    with pytest.raises(SettingsError, match="port"):
        load_settings(config)
    monkeypatch.delenv("VLSEARCH_PORT")
    leaky = tmp_path / "leaky.toml"
    leaky.write_text('api_keys = "sk-live-SECRET"\nmax_batch = "sk-other-SECRET"\n')  # a key in the wrong place
    with pytest.raises(SettingsError, match="max_batch") as bad:
        load_settings(leaky)
    assert "SECRET" not in str(bad.value)  # the error names the field, never the value, which may be a key
    monkeypatch.setenv("VLSEARCH_INDEX_ROOTS", "~no_such_user_here/photos")
    with pytest.raises(SettingsError, match="index_roots.*absolute path"):
        load_settings(config)
    monkeypatch.delenv("VLSEARCH_INDEX_ROOTS")
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(SettingsError, match="broken.toml"):
        load_settings(broken)


def test_misspelt_environment_variables_are_named():
    from vlsearch.api.settings import unknown_environment

    env = {"VLSEARCH_API_KEY": "k", "VLSEARCH_API_KEYS": "k", "vlsearch_port": "1", "VLSEARCH_CONFIG": "x",
           "HOME": "/root", "VLSEARCH_INDEX_ROOT": "/srv"}
    assert unknown_environment(env) == ["VLSEARCH_API_KEY", "VLSEARCH_INDEX_ROOT"]


# -- the real `vlsearch serve` --------------------------------------------------------------------


def test_vlsearch_serve_answers_over_http_and_warns_when_exposed(tmp_path, tiny_encoder):
    import subprocess
    import sys

    from tests.api_helpers import free_port, wait_until_serving

    allowed = tmp_path / "allowed"
    write_photos(allowed, 3)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([allowed])
    lib.close()
    port = free_port()
    config = tmp_path / "vlsearch.toml"
    config.write_text(f'index_roots = ["{allowed}"]\nvqa_model = "tiny-random"\nitm_model = "tiny-random"\n')
    env = {**os.environ, "VLSEARCH_API_KEYS": KEY, "VLSEARCH_OCR": "false", "VLSEARCH_API_KEY": KEY}
    cmd = [sys.executable, "-m", "vlsearch.api.cli", "serve", "--library", str(tmp_path / "lib"), "--host", "0.0.0.0",
           "--port", str(port), "--config", str(config), "--caption-model", "tiny-random",
           "--model-dir", str(tmp_path / "models")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(proc, url)
        hits = httpx.get(url + "/api/v1/search", params={"q": "shapes", "k": 2}).json()["hits"]
        assert len(hits) == 2
        assert httpx.post(url + "/api/v1/caption", data={"image_id": "1"}).json()["model"] == "tiny-random"
        job = httpx.post(url + "/api/v1/index", json={"paths": [str(allowed)]}, headers=AUTH)
        assert job.status_code == 202 and wait_for(url, job.json()["url"])["state"] == "succeeded"
        metrics = httpx.get(url + "/api/v1/metrics").text
        assert 'vlsearch_model_load_seconds{model="tiny-random",task="embed"}' in metrics
        assert 'vlsearch_model_load_seconds{model="tiny-random",task="vectors"}' in metrics  # FAISS read at startup
    finally:
        proc.terminate()
        out, errors = proc.communicate(timeout=30)
    assert "no API key configured" not in errors and "reads need no key" in errors
    assert "VLSEARCH_API_KEY is not a vlsearch setting" in errors and KEY not in errors + out
    assert KEY not in out + errors


def test_serving_beyond_loopback_without_keys_warns_loudly(tmp_path, tiny_encoder, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from vlsearch.api.cli import app as cli

    write_photos(tmp_path / "photos", 1)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))  # bind nothing, just check the start
    monkeypatch.setenv("VLSEARCH_OCR", "false")
    for host, warned in (("0.0.0.0", True), ("127.0.0.1", False)):
        result = CliRunner().invoke(cli, ["serve", "--library", str(tmp_path / "lib"), "--host", host,
                                          "--no-captions", "--vqa-model", "tiny-random", "--itm-model", "tiny-random",
                                          "--model-dir", str(tmp_path / "models")])
        assert result.exit_code == 0, result.output
        assert ("WARNING: serving on 0.0.0.0 with no API key configured" in result.output) is warned
    assert [kw["host"] for kw in served] == ["0.0.0.0", "127.0.0.1"]
