"""The web page's product controls in a real browser (Debian's chromium, Playwright) against a real `vlsearch serve`
over an imported catalogue: one result per product, conditions typed or picked from the facets, the box tool."""

from __future__ import annotations

import json

import pytest

from tests.products import importer, write_catalogue
from tests.test_web import CHROMIUM, browser, vlsearch_serve  # noqa: F401 (a fixture)
from vlsearch.library import Library

pytestmark = pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM), reason="Debian's chromium is not "
                                "installed (make test installs it where it can)")


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("web-shop")
    shoppers = write_catalogue(root)
    lib = Library.open(root / "lib")
    importer(lib, tiny_encoder).run(root / "catalogue.csv")
    lib.close()
    (root / "shopper.jpg").write_bytes(shoppers["P-CAT"])
    with vlsearch_serve(root) as url:
        yield url, root


@pytest.fixture
def page(browser, shop):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(shop[0] + "/")
    yield page
    context.close()
    assert not errors, errors


def cards(page) -> list[str]:
    return page.eval_on_selector_all("#results a.result", "els => els.map(e => e.innerText)")


def grouped_search(page, text: str) -> None:
    if not page.is_visible("#group-product"):
        page.click("#products-panel summary")
    page.check("#group-product")
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelectorAll('#results a.result').length > 0 && "
                           "!document.querySelector('#results').hasAttribute('aria-busy')")


def test_one_card_per_product_with_its_title_brand_and_price(page):
    grouped_search(page, "a photo")
    shown = cards(page)
    assert len(shown) == 7 and "products" in page.inner_text("#status")
    assert any("Tabby cat cushion" in c and "Purrfect · 19.50 EUR" in c for c in shown), shown


def test_facets_count_and_a_picked_one_narrows_the_products(page):
    grouped_search(page, "a photo")
    page.wait_for_selector("#facets:not([hidden]) .chip")
    chips = page.eval_on_selector_all("#facets .chip", "els => els.map(e => e.textContent)")
    assert "Orbit (2)" in chips and "posters (3)" in chips, chips
    page.click("#facets .chip:text('Orbit (2)')")
    page.wait_for_function("document.querySelectorAll('#results a.result').length === 2")
    assert page.input_value("#where") == "brand=Orbit" and "where=brand%3DOrbit" in page.url


def test_typed_conditions_narrow_the_products(page):
    grouped_search(page, "a photo")
    page.fill("#where", "price<20; category=posters")
    page.press("#where", "Enter")
    page.wait_for_function("document.querySelectorAll('#results a.result').length === 1")
    assert "Rocket launch poster" in cards(page)[0]


def test_a_box_drawn_on_the_query_image_searches_that_region(page, shop):
    _, root = shop
    page.set_input_files("#image-input", str(root / "shopper.jpg"))
    page.wait_for_selector("#results a.result")
    frame = page.locator("#query-frame").bounding_box()
    with page.expect_request(lambda r: r.url.endswith("/api/v1/search") and r.method == "POST") as sent:
        page.mouse.move(frame["x"] + frame["width"] * 0.1, frame["y"] + frame["height"] * 0.2)
        page.mouse.down()
        page.mouse.move(frame["x"] + frame["width"] * 0.6, frame["y"] + frame["height"] * 0.9, steps=5)
        page.mouse.up()
    box = json.loads(sent.value.post_data)["box"]
    assert box == pytest.approx([0.1, 0.2, 0.6, 0.9], abs=0.02)
    assert page.is_visible("#query-box") and "region" in page.inner_text("#box-hint")
    with page.expect_request(lambda r: r.url.endswith("/api/v1/search") and r.method == "POST") as sent:
        page.click("#clear-box")
    assert json.loads(sent.value.post_data)["box"] is None and not page.is_visible("#query-box")
