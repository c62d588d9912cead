"""The page's Duplicates view in a real browser against a real `vlsearch serve`: groups with the image to keep
first, and "Forget the others" asking for the API key, then forgetting them (the files stay)."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.photos import write_photos
from tests.test_web import CHROMIUM, browser, vlsearch_serve  # noqa: F401 (a fixture)
from vlsearch.indexer import Indexer
from vlsearch.library import Library

pytestmark = pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM), reason="Debian's chromium is not "
                                "installed (make test installs it where it can)")
KEY = "dup-key"


def test_duplicate_groups_are_reviewed_and_the_others_forgotten(browser, tmp_path, tiny_encoder):  # noqa: F811
    photos = write_photos(tmp_path / "photos", 3)
    shutil.copy(photos[0], tmp_path / "photos" / "again.jpg")  # the same bytes under another name
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    lib.close()
    with vlsearch_serve(tmp_path, VLSEARCH_API_KEYS=KEY) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: dialog.accept())  # "Forget 1 image(s)…?"
        expected = httpx.get(url + "/api/v1/duplicates").json()  # what the page asks for (random weights)
        assert expected["total"] >= 1
        first = expected["groups"][0]
        page.goto(url + "/")
        page.click("#tab-duplicates")
        page.click("#dup-form button[type=submit]")
        page.wait_for_selector("#dup-groups .dup-group")
        assert page.locator("#dup-groups .dup-group").count() == expected["total"]
        shown = page.eval_on_selector_all("#dup-groups .dup-group >> nth=0 >> .dup-name",
                                          "els => els.map(e => e.textContent)")
        assert shown == [m["path"].rsplit("/", 1)[-1] for m in first["members"]]  # the keeper first
        assert "suggested to keep" in page.inner_text("#dup-groups .dup-group >> nth=0 >> .keeper")
        forget = "#dup-groups .dup-group >> nth=0 >> button"
        page.click(forget)  # no key yet: the page asks for it
        page.wait_for_selector("#key-form:not([hidden])")
        page.fill("#api-key", KEY)
        page.press("#api-key", "Enter")
        page.click(forget)
        page.wait_for_function(f"document.querySelectorAll('#dup-groups .dup-group').length === "
                               f"{expected['total'] - 1}")
        others = [m for m in first["members"] if m["id"] != first["keeper"]]
        assert f"Forgot {len(others)} image(s)" in page.inner_text("#status")
        for m in others:  # gone from the library, not from the disk
            assert httpx.get(url + f"/api/v1/images/{m['id']}").status_code == 404
            assert (tmp_path / "photos" / m["path"].rsplit("/", 1)[-1]).exists()
        assert httpx.get(url + f"/api/v1/images/{first['keeper']}").status_code == 200
        context.close()
        assert not errors, errors
