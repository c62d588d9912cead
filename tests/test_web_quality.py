"""The page's Quality view in a real browser against a real `vlsearch serve`: labelled cases typed in, the server's
scores shown per mode as POST /api/v1/eval gives them, and the case at fault named when one is wrong."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from tests.photos import write_photos
from tests.test_web import CHROMIUM, browser, vlsearch_serve  # noqa: F401 (a fixture)
from vlsearch.indexer import Indexer
from vlsearch.library import Library

pytestmark = pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM), reason="Debian's chromium is not "
                                "installed (make test installs it where it can)")


def test_labelled_cases_are_scored_on_the_page(browser, tmp_path, tiny_encoder):  # noqa: F811
    photos = write_photos(tmp_path / "photos", 3)
    shutil.copy(photos[0], tmp_path / "photos" / "again.jpg")
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    lib.close()
    cases = [{"text": "a photo", "relevant": ["photo_0001.jpg"]},
             {"duplicates": [["photo_0000.jpg", "again.jpg"]]}]
    with vlsearch_serve(tmp_path) as url:
        expected = httpx.post(url + "/api/v1/eval", json={"cases": cases}, timeout=60).json()
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        page.click("#tab-quality")
        page.fill("#quality-cases", "\n".join(json.dumps(c) for c in cases))
        page.click("#quality-form button[type=submit]")
        page.wait_for_selector("#quality-table")
        rows = page.eval_on_selector_all("#quality-table tr", "rows => rows.map(r => [...r.children].map(c => "
                                         "c.textContent))")
        assert rows[0] == ["Mode", "Cases", "R@1", "R@5", "R@10", "MRR", "nDCG@10"]
        assert rows[1:] == [[m["mode"], str(m["scored"]), *(f"{m['mean'][c]:.3f}" for c in (
            "recall@1", "recall@5", "recall@10", "reciprocal_rank", "ndcg@10"))] for m in expected["modes"]]
        assert "Duplicate pairs: precision 1.000, recall 1.000" in page.inner_text("#quality-results")
        page.fill("#quality-cases", '{"text": "a cat"}')  # no "relevant"
        page.click("#quality-form button[type=submit]")
        page.wait_for_selector("#error:not([hidden])")
        assert "cases[0]" in page.inner_text("#error") and "relevant" in page.inner_text("#error")
        page.fill("#quality-cases", "{not json")
        page.click("#quality-form button[type=submit]")
        page.wait_for_function("document.querySelector('#error').textContent.includes('Line 1 is not JSON')")
        context.close()
        assert not errors, errors
