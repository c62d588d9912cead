"""The served page and search endpoint, over real HTTP from a real uvicorn server."""

import httpx
import pytest

from tests.api_helpers import make_app, serving
from tests.photos import write_photos
from vlsearch.indexer import Indexer
from vlsearch.library import Library


@pytest.fixture
def server(tmp_path, tiny_encoder):
    write_photos(tmp_path / "photos", 5)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with serving(make_app(lib, tiny_encoder)) as url:
        yield url


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


def test_caption_endpoint_without_a_model_says_how_to_start_one(server):
    r = httpx.post(f"{server}/api/v1/caption", files={"file": ("p.jpg", b"x", "image/jpeg")})
    assert r.status_code == 503 and "set caption_model = " in r.json()["detail"]


def test_page_and_its_files_are_served_under_a_strict_content_security_policy(server):
    r = httpx.get(server + "/")
    assert r.status_code == 200 and 'id="search-form"' in r.text and "/web/app.js" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    script = httpx.get(server + "/web/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "/api/v1" in script.text
    assert httpx.get(server + "/web/style.css").headers["content-type"].startswith("text/css")
    assert httpx.get(server + "/web/../pyproject.toml").status_code == 404


@pytest.fixture
def server_with_captions(tmp_path, tiny_encoder):
    from vlsearch.captioner import load_image_text_model

    write_photos(tmp_path / "photos", 3)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    captioner = load_image_text_model("tiny-random", "caption", device="cpu")
    with serving(make_app(lib, tiny_encoder, captioner=captioner, max_upload_bytes=200_000,
                          max_pixels=1_000_000)) as url:
        yield url, tmp_path / "photos"


def test_caption_endpoint_gives_alt_text_and_names_the_model(server_with_captions):
    url, photos = server_with_captions
    with open(photos / "photo_0001.jpg", "rb") as f:
        r = httpx.post(f"{url}/api/v1/caption", files={"file": ("p.jpg", f, "image/jpeg")},
                       data={"prompt": "a photo of"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny-random" and r.json()["caption"].startswith("a photo of")
    bad = httpx.post(f"{url}/api/v1/caption", files={"file": ("notes.jpg", b"not a picture", "image/jpeg")})
    assert bad.status_code == 415 and "notes.jpg" in bad.json()["detail"] and "not an image" in bad.json()["detail"]
    big = httpx.post(f"{url}/api/v1/caption", files={"file": ("big.jpg", b"\xff" * 300_000, "image/jpeg")})
    assert big.status_code == 413 and "smaller image" in big.json()["detail"]
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (2000, 1000)).save(png, format="PNG")  # a few kB, 2 megapixels
    huge = httpx.post(f"{url}/api/v1/caption", files={"file": ("huge.png", png.getvalue(), "image/png")})
    assert huge.status_code == 413 and "over the 1 megapixels" in huge.json()["detail"]
    assert "--max-pixels" not in huge.json()["detail"]
    assert httpx.post(f"{url}/api/v1/caption").status_code == 422
    assert httpx.get(f"{url}/api/v1/search", params={"q": "photo_0001", "mode": "keyword"}).json()["hits"][0][
        "path"].endswith("photo_0001.jpg")
    assert httpx.get(f"{url}/api/v1/search", params={"q": "x", "mode": "fuzzy"}).status_code == 422


def test_offline_alt_text_for_a_sliver_of_an_image_is_a_caption_not_a_crash(tmp_path, tiny_encoder):
    """A 3000x2 upload once sent OCR into a many-gigabyte resize and the request into a 500."""
    import io

    from PIL import Image

    from vlsearch.captioner.offline import OfflineCaptioner

    write_photos(tmp_path / "photos", 1)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with serving(make_app(lib, tiny_encoder, captioner=OfflineCaptioner("cpu"))) as url:
        for size in ((3000, 2), (2, 3000), (1, 1)):
            png = io.BytesIO()
            Image.new("RGB", size, "gray").save(png, format="PNG")
            r = httpx.post(f"{url}/api/v1/caption", files={"file": ("thin.png", png.getvalue(), "image/png")})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "offline" and r.json()["caption"]
