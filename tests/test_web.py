"""The web page in a real browser: Debian's chromium driven by Playwright against a real `vlsearch serve`.

Each main view is saved as a screenshot under the test's tmp folder (printed with -s) so a person can look."""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import free_port, wait_until_serving
from tests.photos import write_photo, write_photos
from vlsearch.captioner import load_image_text_model
from vlsearch.indexer import Indexer
from vlsearch.indexer.describe import Describer
from vlsearch.indexer.tagging import Tagger
from vlsearch.indexer.vocabulary import Label, save_vocabulary
from vlsearch.library import Library

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="Debian's chromium is not installed and could not be (make test runs apt-get install chromium where "
           "it can; Playwright cannot download browsers here)",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_encoder):
    """`vlsearch serve` over 8 photos indexed and captioned with the tiny models; yields (url, photos, shots)."""
    root = tmp_path_factory.mktemp("web")
    photos = root / "photos"
    write_photos(photos, 6)
    write_photo(photos / "pixel_may.jpg", 50, taken=datetime(2024, 5, 3), make="Google", model="Pixel 8")
    write_photo(photos / "canon_jan.jpg", 51, taken=datetime(2023, 1, 9), make="Canon", model="EOS R6")
    lib = Library.open(root / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([photos])
    Describer(lib, load_image_text_model("tiny-random", "caption", device="cpu"), None, workers=0).run([photos])
    save_vocabulary(lib, "shapes", [Label(w, f"a photo of {w}") for w in ("circles", "squares", "stripes")], 0.2,
                    "test")
    Tagger(lib, tiny_encoder).run()
    lib.close()
    shots = root / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots of the web page: {shots}")
    with vlsearch_serve(root) as url:
        yield url, photos, shots


@contextmanager
def vlsearch_serve(root: Path, **env: str):
    """The real `vlsearch serve` over root/lib on a free loopback port, with extra VLSEARCH_* settings."""
    port = free_port()
    cmd = [sys.executable, "-m", "vlsearch.api.cli", "serve", "--library", str(root / "lib"), "--port", str(port),
           "--model-dir", str(root / "models"), "--caption-model", "tiny-random", "--vqa-model", "tiny-random",
           "--itm-model", "tiny-random"]
    proc = subprocess.Popen(cmd, env={**os.environ, "VLSEARCH_OCR": "false", **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, url)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, site):
    # bypass_csp: Playwright evaluates its wait conditions as strings, which the page's own policy forbids.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(site[0] + "/")
    yield page
    context.close()
    # An API answer the test provoked on purpose shows in the console as a failed request; script errors do not.
    assert not [e for e in errors if "Failed to load resource" not in e], errors


def search(page, text: str) -> None:
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_selector("#results a.result")


def result_ids(page) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all("#results a.result", "els => els.map(e => e.dataset.id)")]


def test_text_search_shows_results_with_alt_text_and_a_shareable_url(page, site):
    url, _, shots = site
    search(page, "red shapes")
    assert len(result_ids(page)) == 8
    alts = page.eval_on_selector_all("#results a.result img", "els => els.map(e => e.alt)")
    assert all(alt.strip() for alt in alts)
    assert "q=red+shapes" in page.url or "q=red%20shapes" in page.url
    page.screenshot(path=shots / "search.png", full_page=True)
    shared = page.context.new_page()  # the URL alone brings the same search back
    shared.goto(page.url)
    shared.wait_for_selector("#results a.result")
    assert result_ids(shared) == result_ids(page) and shared.input_value("#q") == "red shapes"


def test_image_upload_finds_that_image_first(page, site):
    _, photos, shots = site
    page.set_input_files("#image-input", str(photos / "pixel_may.jpg"))
    page.wait_for_selector("#results a.result")
    first = page.get_attribute("#results a.result", "data-id")
    detail = httpx.get(f"{site[0]}/api/v1/images/{first}").json()
    assert Path(detail["path"]).name == "pixel_may.jpg"
    assert page.is_visible("#query-image")
    page.screenshot(path=shots / "image-search.png", full_page=True)


def test_a_filter_changes_the_results(page):
    search(page, "shapes")
    assert len(result_ids(page)) == 8
    if not page.is_visible("#filter-camera"):  # filters folded away in a <details>
        page.click("details summary")
    page.fill("#filter-camera", "pixel")
    page.press("#filter-camera", "Enter")
    page.wait_for_function("document.querySelectorAll('#results a.result').length === 1")
    assert "pixel" in page.url.lower()


def test_detail_view_and_find_similar(page, site):
    shots = site[2]
    search(page, "shapes")
    first = result_ids(page)[0]
    page.click(f"#results a.result[data-id='{first}']")
    page.wait_for_selector("dialog#detail[open]")
    # An <img> without src is "complete" too: wait for the image the details set (the alt text is set before it).
    page.wait_for_function("(i => i.getAttribute('src') && i.complete)(document.querySelector('#detail-image'))")
    assert page.get_attribute("#detail-image", "alt")
    assert page.inner_text("#detail-exif").strip()
    page.screenshot(path=shots / "detail.png", full_page=True)
    page.click("#find-similar")
    page.wait_for_selector("dialog#detail:not([open])", state="attached")
    page.wait_for_function(f"![...document.querySelectorAll('#results a.result')].some(a => a.dataset.id === "
                           f"'{first}')")
    similar = result_ids(page)
    assert similar and first not in similar  # neighbours of the image, without the image itself
    # Filters apply to "find similar" too (a search by the stored image).
    canon = [h["id"] for h in httpx.post(site[0] + "/api/v1/search", json={"text": "x", "filters": {
        "camera": "canon"}}).json()["hits"]]
    if not page.is_visible("#filter-camera"):
        page.click("details summary")
    page.fill("#filter-camera", "canon")
    page.press("#filter-camera", "Enter")
    expected = [i for i in canon if i != first]
    page.wait_for_function(f"document.querySelectorAll('#results a.result').length === {len(expected)}")
    assert result_ids(page) == expected and "similar=" in page.url


def test_an_images_tags_are_shown_and_choosing_one_searches_with_it(page, site):
    url = site[0]
    tagged = {}  # image id -> its tags, from the API
    for hit in httpx.get(url + "/api/v1/search", params={"q": "x", "k": 50}).json()["hits"]:
        tagged[hit["id"]] = [t["label"] for t in httpx.get(url + f"/api/v1/images/{hit['id']}").json()["tags"]]
    image_id, labels = next((i, ts) for i, ts in tagged.items() if ts)
    page.goto(url + "/?q=x")
    page.wait_for_selector("#results a.result")
    page.click(f"#results a.result[data-id='{image_id}']")
    page.wait_for_selector("#detail-tags button.tag")
    assert page.eval_on_selector_all("#detail-tags button.tag", "els => els.map(e => e.textContent)") == labels
    assert not page.is_visible("#detail-tags-none")
    page.click("#detail-tags button.tag >> nth=0")
    page.wait_for_selector("dialog#detail:not([open])", state="attached")
    expected = sorted(i for i, ts in tagged.items() if labels[0] in ts)
    page.wait_for_function(f"document.querySelectorAll('#results a.result').length === {len(expected)}")
    assert sorted(result_ids(page)) == expected and page.input_value("#filter-tags") == labels[0]


def test_caption_tool_returns_alt_text_and_copies_it(page, site):
    url, photos, shots = site
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page.click("#tab-caption")
    page.set_input_files("#caption-input", str(photos / "canon_jan.jpg"))
    page.wait_for_selector("#copy-caption:enabled")  # disabled while the caption is being written
    expected = httpx.post(url + "/api/v1/caption", files={"file": ("x.jpg", (photos / "canon_jan.jpg").read_bytes(),
                                                                    "image/jpeg")}).json()["caption"]
    assert page.inner_text("#caption-text").strip() == expected.strip() and expected.strip()
    page.screenshot(path=shots / "caption.png", full_page=True)
    page.click("#copy-caption")
    page.wait_for_function("document.querySelector('#copy-caption-status').textContent.trim().length > 0")
    assert page.evaluate("navigator.clipboard.readText()").strip() == expected.strip()


def test_typing_searches_without_enter_and_no_match_says_so(page):
    page.type("#q", "shapes", delay=20)  # no Enter: the search runs once typing pauses
    page.wait_for_selector("#results a.result")
    assert len(result_ids(page)) == 8
    if not page.is_visible("#filter-camera"):
        page.click("details summary")
    page.fill("#filter-camera", "no such camera")
    page.press("#filter-camera", "Enter")
    page.wait_for_function("document.querySelectorAll('#results a.result').length === 0")
    assert "no matches" in page.inner_text("#status").lower()
    assert not page.is_visible("#error")


def test_ask_the_collection_answers_in_words(page, site):
    """The page says what it searched for and asked of each photo, then shows the photos POST /ask said yes to, in
    its order, each with its answer and probability."""
    question = "which photos show shapes?"
    page.click("#tab-ask")
    page.fill("#ask-question", question)
    page.press("#ask-question", "Enter")
    page.wait_for_function("document.querySelector('#ask-summary').textContent.trim().length > 0 || "
                           "!document.querySelector('#error').hidden")
    assert not page.is_visible("#error"), page.inner_text("#error")
    page.screenshot(path=site[2] / "ask.png", full_page=True)
    expected = httpx.post(site[0] + "/api/v1/ask", json={"question": question, "k": 24},  # the page's PAGE_SIZE
                          timeout=120).json()
    assert (expected["retrieval_query"], expected["check"]) == ("shapes", "does the picture show shapes?")
    assert page.inner_text("#ask-summary") == ("Searched for “shapes”, then checked 8 candidates with tiny-random: "
                                               "“does the picture show shapes?”.")
    found = expected["results"]
    # The tiny VQA model says yes to all 8 photos (P = 0.53), so the page has cards to show.
    assert found and all(f["answer"] == "yes" and f["answer_score"] >= 0.5 for f in found)
    assert page.inner_text("#status") == f"{len(found)} matching images"
    cards = page.eval_on_selector_all("#ask-results a.result", """els => els.map(e => [e.dataset.id,
        e.querySelector('.caption').textContent, e.querySelector('.answer').textContent])""")
    assert cards == [[str(f["id"]), f["caption"], f"Answer: yes ({math.floor(f['answer_score'] * 100 + 0.5)}%)"]
                     for f in found]


def test_an_api_error_is_shown_in_words(page):
    page.select_option("#mode", "keyword")
    if not page.is_visible("#filter-min-score"):
        page.click("details summary")
    page.fill("#filter-min-score", "0.2")
    search_text = "shapes"
    page.fill("#q", search_text)
    page.press("#q", "Enter")
    page.wait_for_selector("#error", state="visible")
    message = page.inner_text("#error")
    assert "keyword" in message and "{" not in message and "detail" not in message


def test_keyboard_alone_reaches_search_a_result_and_the_detail_view(page):
    for _ in range(30):  # from the top of the page, Tab until the search box has focus
        if page.evaluate("document.activeElement && document.activeElement.id") == "q":
            break
        page.keyboard.press("Tab")
    else:
        pytest.fail("Tab never reached the search box")
    page.keyboard.type("shapes")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results a.result")
    for _ in range(60):
        if page.evaluate("document.activeElement.classList.contains('result')"):
            break
        page.keyboard.press("Tab")
    else:
        pytest.fail("Tab never reached a result")
    focused = page.evaluate("document.activeElement.dataset.id")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused result shows no focus outline"
    page.keyboard.press("Enter")
    page.wait_for_selector("dialog#detail[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog#detail:not([open])", state="attached")
    assert page.evaluate("document.activeElement.dataset.id") == focused  # focus goes back where it was


def test_no_serious_accessibility_violations(page, site):
    from axe_playwright_python.sync_playwright import Axe

    search(page, "shapes")
    for width in (1280, 375):  # desktop and phone width
        page.set_viewport_size({"width": width, "height": 900})
        results = Axe().run(page)
        serious = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
        assert not serious, "\n".join(f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes)" for v in serious)
    page.screenshot(path=site[2] / "phone.png", full_page=True)
    assert re.search(r"\d", page.inner_text("#library-status"))  # the image count is shown


def test_a_server_that_closes_reads_asks_for_the_key_and_then_works(browser, site):
    url, photos, shots = site
    root = photos.parent
    with vlsearch_serve(root, VLSEARCH_API_KEYS="web-key", VLSEARCH_AUTH_READS="true") as keyed:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        page = context.new_page()
        page.goto(keyed + "/")
        page.wait_for_selector("#key-form", state="visible")
        page.fill("#q", "shapes")
        page.press("#q", "Enter")
        page.wait_for_selector("#error", state="visible")
        assert "API key" in page.inner_text("#error") and "Bearer" not in page.inner_text("#error")
        page.fill("#api-key", "wrong")
        page.press("#api-key", "Enter")
        page.wait_for_function("document.querySelector('#error').textContent.includes('not accepted')")
        page.fill("#api-key", "web-key")
        page.press("#api-key", "Enter")
        page.wait_for_selector("#results a.result")
        assert page.is_hidden("#key-form") and len(result_ids(page)) == 8
        # Thumbnails need the key too: they arrive through the key-carrying fetch, not a bare <img src>.
        page.wait_for_function("[...document.querySelectorAll('#results a.result img')].every("
                               "i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=shots / "with-key.png", full_page=True)
        page.reload()  # the key stays for this tab
        page.fill("#q", "shapes")
        page.press("#q", "Enter")
        page.wait_for_selector("#results a.result")
        context.close()


PASTE = """([name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
}"""


def paste_file(page, name: str, mime: str, content: bytes) -> None:
    """Paste a file as the browser does for a copied image (a paste event whose clipboardData holds the file)."""
    page.evaluate(PASTE, [name, mime, base64.b64encode(content).decode()])


def test_pasting_an_image_searches_by_it_and_pasting_other_files_says_why_not(page, site):
    _, photos, _ = site
    page.click("#tab-ask")  # pasted on the Ask tab, an image is still a search by that image
    paste_file(page, "clip.jpg", "image/jpeg", (photos / "canon_jan.jpg").read_bytes())
    page.wait_for_selector("#search-view:not([hidden]) #results a.result")
    first = page.get_attribute("#results a.result", "data-id")
    assert Path(httpx.get(f"{site[0]}/api/v1/images/{first}").json()["path"]).name == "canon_jan.jpg"
    assert page.is_visible("#query-image") and "clip.jpg" in page.inner_text("#query-preview")
    paste_file(page, "notes.txt", "text/plain", b"not a picture")
    page.wait_for_selector("#error", state="visible")
    assert "notes.txt is not an image" in page.inner_text("#error")
    assert page.get_attribute("#results a.result", "data-id") == first  # the search on screen is kept


def test_a_shared_link_to_a_deleted_image_says_so_and_clears_the_preview(page, site):
    page.goto(site[0] + "/?similar=987654")
    page.wait_for_selector("#error", state="visible")
    assert "987654 is no longer in the library" in page.inner_text("#error")
    assert page.is_hidden("#query-preview") and "similar=" not in page.url
    page.fill("#q", "shapes")  # and the page goes on working
    page.press("#q", "Enter")
    page.wait_for_selector("#results a.result")


def test_keyword_mode_with_an_image_explains_in_the_page_s_own_words(page, site):
    page.select_option("#mode", "keyword")
    page.set_input_files("#image-input", str(site[1] / "pixel_may.jpg"))
    page.wait_for_selector("#error", state="visible")
    message = page.inner_text("#error")
    assert "keyword mode" in message and "--" not in message  # no CLI flags in the browser


def test_index_job_progress_then_the_result_and_paging(browser, tmp_path):
    """A job another client starts shows its progress, then what it did; the new images page with More results."""
    allowed = tmp_path / "photos"
    write_photos(allowed, 30)
    key = "job-key"
    env = {"VLSEARCH_API_KEYS": key, "VLSEARCH_INDEX_ROOTS": str(allowed), "VLSEARCH_MODEL": "tiny-random",
           "VLSEARCH_INDEX_LAG_S": "0"}
    with vlsearch_serve(tmp_path, **env) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        page = context.new_page()
        page.clock.install()  # time runs, and the test can jump to the page's next look at the jobs
        page.goto(url + "/")
        page.wait_for_function("document.querySelector('#library-status').textContent.includes('empty')")
        # Hold the library's write lock so the job is caught running (it waits, as it would behind a busy disk).
        db = sqlite3.connect(tmp_path / "lib" / "library.db", timeout=30)
        db.execute("BEGIN IMMEDIATE")
        try:
            r = httpx.post(url + "/api/v1/index", json={"paths": [str(allowed)], "captions": False, "ocr": False},
                           headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 202, r.text
            page.clock.fast_forward(16_000)
            page.wait_for_selector("#job-status progress")
            assert "Indexing" in page.inner_text("#job-status")
            page.screenshot(path=tmp_path / "job-running.png", full_page=True)
        finally:
            db.rollback()
            db.close()
        deadline = time.monotonic() + 60
        while httpx.get(url + r.json()["url"]).json()["state"] == "running":
            assert time.monotonic() < deadline, "the index job did not finish"
            time.sleep(0.2)
        page.clock.fast_forward(4_000)
        page.wait_for_function("document.querySelector('#job-status').textContent.includes('finished')")
        note = page.inner_text("#job-status")
        assert "30 files checked" in note and "30 added" in note, note
        page.wait_for_function("/\\b30 images\\b/.test(document.querySelector('#library-status').textContent)")
        # 30 images: a first page of 24 and More results for the rest.
        search(page, "shapes")
        assert len(result_ids(page)) == 24 and page.is_visible("#more")
        page.click("#more")
        page.wait_for_function("document.querySelectorAll('#results a.result').length === 30")
        assert page.is_hidden("#more")
        # Words changed and More clicked before the new search ran: the new search starts, nothing is appended.
        page.fill("#q", "circles")
        page.evaluate("document.querySelector('#more').hidden = false")  # as if More were still on screen
        page.click("#more")
        page.wait_for_function("document.querySelector('#status').textContent.startsWith('24 results')")
        assert len(result_ids(page)) == 24 and "q=circles" in page.url
        context.close()
