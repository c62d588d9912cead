"""The demo as a new user meets it: `make demo`'s library (the bundled sample photos, the offline preset, OCR) served
as `make demo` serves it, with no BLIP weights on the machine. Every tab of the page is walked in a real browser and
each finds results or answers; none shows an error box."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.api_helpers import free_port, wait_until_serving
from tests.test_web import CHROMIUM, browser  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (make "
                                "test installs it where it can)")
CLI = [sys.executable, "-m", "vlsearch.api.cli"]
CASES = Path(__file__).resolve().parent.parent / "search" / "eval" / "samples.jsonl"


@contextmanager
def demo_server(root: Path):
    """`vlsearch serve --library DEMO/library`, as the Makefile's demo runs it; an empty model folder, so no BLIP."""
    port = free_port()
    env = {**os.environ, "VLSEARCH_MODEL_DIR": str(root / "models")}
    proc = subprocess.Popen([*CLI, "serve", "--library", str(root / "library"), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{port}", timeout_s=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "VLSEARCH_MODEL_DIR": str(root / "models")}
    subprocess.run([sys.executable, "-m", "vlsearch.images.samples", str(root / "photos")], check=True, env=env,
                   capture_output=True)
    subprocess.run([*CLI, "index", str(root / "photos"), "--library", str(root / "library"), "--model", "offline",
                    "--caption-model", "offline"], check=True, env=env, capture_output=True)
    with demo_server(root) as url:
        yield url, root / "photos"


@pytest.fixture
def page(browser, demo):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.goto(demo[0] + "/")
    yield page
    assert not page.is_visible("#error"), page.inner_text("#error")  # never an error box
    context.close()


def cards(page, grid: str) -> list[str]:
    return page.eval_on_selector_all(f"{grid} a.result", "els => els.map(e => e.querySelector('img').alt)")


def wait_for_text(page, selector: str) -> str:
    page.wait_for_function(f"document.querySelector('{selector}').textContent.trim().length > 0 || "
                           "!document.querySelector('#error').hidden")
    return page.inner_text(selector)


def test_search_finds_the_cat(page):
    page.fill("#q", "a cat")
    page.press("#q", "Enter")
    page.wait_for_selector("#results a.result")
    assert "cat" in cards(page, "#results")[0].lower()  # the offline caption of chelsea.jpg: "tiger cat or ..."


@pytest.mark.parametrize(("question", "said", "found"), [
    ("which photos have text?", "text read in the photos", "Text:"),
    ("which photos show a horse?", "not checked one by one", "Found by similarity"),
], ids=["from OCR", "by search"])
def test_ask_answers_without_blip_and_says_what_the_answer_rests_on(page, question, said, found):
    page.click("#tab-ask")
    page.fill("#ask-question", question)
    page.press("#ask-question", "Enter")
    summary = wait_for_text(page, "#ask-summary")
    assert said in summary and "--" not in summary
    page.wait_for_selector("#ask-results a.result")
    answers = page.eval_on_selector_all("#ask-results a.result .answer", "els => els.map(e => e.textContent)")
    kinds = ("Text: ",) if found == "Text:" else ("Found by similarity", "Found by its words")
    assert answers and all(a.startswith(kinds) for a in answers) and any(a.startswith(found) for a in answers), answers


def test_a_caption_is_written_for_an_upload(page, demo):
    page.click("#tab-caption")
    page.set_input_files("#caption-input", str(demo[1] / "chelsea.jpg"))
    page.wait_for_selector("#copy-caption:enabled")
    assert "cat" in page.inner_text("#caption-text").lower()


def test_a_question_about_one_image_is_answered_from_its_text(page):
    page.fill("#q", "a printed page of text")
    page.press("#q", "Enter")
    page.wait_for_selector("#results a.result")
    page.click("#results a.result")
    page.fill("#vqa-question", "is there any text?")
    page.press("#vqa-question", "Enter")
    page.wait_for_function("!/^(|Thinking…)$/.test(document.querySelector('#vqa-answer').textContent.trim())")
    answer = page.inner_text("#vqa-answer")
    assert answer.startswith(("yes", "no")) and "--" not in answer, answer
    page.keyboard.press("Escape")


def test_duplicates_and_quality_report_on_the_demo(page):
    page.click("#tab-duplicates")
    page.click("#dup-form button[type=submit]")
    page.wait_for_function("/duplicates|No duplicates/.test(document.querySelector('#status').textContent)")
    page.click("#tab-quality")
    page.fill("#quality-cases", "\n".join(CASES.read_text().splitlines()[:5]))
    page.click("#quality-form button[type=submit]")
    page.wait_for_selector("#quality-table")
    rows = page.eval_on_selector_all("#quality-table tr", "rows => rows.map(r => r.children[0].textContent)")
    assert rows[1:] == ["vector", "keyword", "hybrid"], rows
