"""Products through the `vlsearch` CLI and the HTTP API: import with its report, grouped and filtered search,
similar products, and the errors that say what to change."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api_helpers import make_app, serving
from tests.products import append_rows, importer, write_catalogue
from tests.test_cli import cli, env  # noqa: F401 (a fixture)
from vlsearch.library import Library


def test_cli_imports_searches_filters_and_finds_similar_products(env):  # noqa: F811
    write_catalogue(env)
    append_rows(env / "catalogue.csv", "P-BAD,Bad price,,,cheap,,photos/coffee.jpg,")
    code, out = cli("products", "import", str(env / "catalogue.csv"), "--model", "tiny-random", "--workers", "0",
                    "--no-captions", "--no-ocr")
    assert code == 1, out  # a row was not imported: a script must notice
    assert "15 rows: 7 new products" in out and "14 images, 0 not indexed" in out and "1 problem" in out
    assert "catalogue.csv:16: price 'cheap' is not a number" in out

    code, out = cli("products", "import", str(env / "catalogue.csv"), "--no-captions", "--no-ocr", "--workers", "0")
    assert code == 1 and "0 new products, 7 updated" in out  # the library's model is the default on re-runs

    code, out = cli("search", "a photo", "--group", "product", "--where", "category=posters", "--where", "price<50",
                    "--json")
    assert code == 0, out
    hits = json.loads(out)
    assert {h["product"]["id"] for h in hits} == {"P-ASTRO", "P-ROCKET"}
    assert {"id", "title", "brand", "category", "price", "currency", "url", "attributes"} <= set(hits[0]["product"])

    code, out = cli("search", "a photo", "--group", "product", "--k", "2")
    assert code == 0 and "best image" in out and out.count("P-") == 2

    shopper = env / "shopper.jpg"
    shopper.write_bytes(write_catalogue(env / "again")["P-CAT"])
    code, out = cli("search", "--image", str(shopper), "--box", "0,0,0.5,1", "--group", "product", "--json")
    assert code == 0 and json.loads(out), out

    code, out = cli("products", "similar", "P-ROCKET", "--k", "3", "--json")
    assert code == 0, out
    assert len(json.loads(out)) == 3 and "P-ROCKET" not in {h["product"]["id"] for h in json.loads(out)}

    (env / "catalogue.xlsx").write_bytes(b"PK\x03\x04")
    for args, words in ((("search", "x", "--where", "price<cheap"), "--where: the condition 'price<cheap'"),
                        (("search", "x", "--group", "brand"), "group must be one of product"),
                        (("search", "--image", str(shopper), "--box", "a,b"), "--box 'a,b': give four numbers"),
                        (("search", "--image", str(shopper), "--box", "0,0,2,1"), "must be left,top,right,bottom"),
                        (("products", "similar", "P-NOPE"), "product 'P-NOPE' is not in the library"),
                        (("products", "import", str(env / "catalogue.xlsx")), "catalogue.xlsx")):
        code, out = cli(*args)
        assert code != 0 and words in out.replace("\n", " "), (args, out)


@pytest.fixture(scope="module")
def shop_site(tmp_path_factory, tiny_encoder):
    folder = tmp_path_factory.mktemp("shop-api")
    shoppers = write_catalogue(folder)
    lib = Library.open(folder / "lib")
    importer(lib, tiny_encoder).run(folder / "catalogue.csv")
    with serving(make_app(lib, tiny_encoder)) as url:
        yield url, shoppers
    lib.close()


def test_api_groups_filters_and_pages_by_product(shop_site):
    url, _ = shop_site
    r = httpx.get(url + "/api/v1/search", params={"q": "a photo", "group": "product", "k": 3}, timeout=60)
    assert r.status_code == 200, r.text
    first = r.json()
    assert len(first["hits"]) == 3 and first["next_offset"] == 3
    seen = [h["product"]["id"] for h in first["hits"]]
    second = httpx.get(url + "/api/v1/search", params={"q": "a photo", "group": "product", "k": 10, "offset": 3},
                       timeout=60).json()
    seen += [h["product"]["id"] for h in second["hits"]]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 7 and second["next_offset"] is None

    r = httpx.get(url + "/api/v1/search", params=[("q", "a photo"), ("group", "product"),
                                                  ("where", "brand=acme|orbit"), ("where", "price>=29")], timeout=60)
    assert {h["product"]["id"] for h in r.json()["hits"]} == {"P-ASTRO", "P-COFFEE", "P-CHINA"}
    body = {"text": "a photo", "group": "product", "filters": {"where": ["colour=white"]}}
    r = httpx.post(url + "/api/v1/search", json=body, timeout=60)
    assert {h["product"]["id"] for h in r.json()["hits"]} == {"P-ASTRO", "P-COFFEE"}


def test_api_reverse_image_search_and_similar_products(shop_site):
    url, shoppers = shop_site
    files = {"file": ("shopper.jpg", shoppers["P-ROCKET"], "image/jpeg")}
    r = httpx.post(url + "/api/v1/search/image", files=files, data={"group": "product", "k": "7"}, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["hits"]) == 7 and all(h["product"] for h in r.json()["hits"])
    r = httpx.get(url + "/api/v1/products/P-ROCKET/similar", params={"k": 10}, timeout=60)
    assert r.status_code == 200 and "P-ROCKET" not in {h["product"]["id"] for h in r.json()["hits"]}
    assert len(r.json()["hits"]) == 6


def test_api_counts_facets_over_the_results(shop_site):
    url, _ = shop_site
    params = [("q", "a photo"), ("group", "product"), ("k", "2"), ("facet", "brand"), ("facet", "colour"),
              ("facet", "material")]
    r = httpx.get(url + "/api/v1/search", params=params, timeout=60)
    assert r.status_code == 200, r.text
    facets = r.json()["facets"]  # over all 7 products, though the page shows 2
    assert facets["brand"] == {"ACME": 2, "Orbit": 2, "Purrfect": 1, "Stable": 1, "Bloom": 1}
    assert facets["colour"]["white"] == 2 and sum(facets["colour"].values()) == 7 and facets["material"] == {}
    narrowed = httpx.post(url + "/api/v1/search", json={"text": "a photo", "facets": ["category"],
                                                        "filters": {"where": ["brand=orbit"]}}, timeout=60)
    assert narrowed.json()["facets"] == {"category": {"posters": 2}}
    assert httpx.get(url + "/api/v1/search", params={"q": "x"}, timeout=60).json()["facets"] is None


def test_api_searches_a_region_of_the_uploaded_image(shop_site):
    url, shoppers = shop_site
    files = {"file": ("shopper.jpg", shoppers["P-CAT"], "image/jpeg")}
    whole = httpx.post(url + "/api/v1/search/image", files=files, data={"group": "product"}, timeout=60).json()
    part = httpx.post(url + "/api/v1/search/image", files=files, data={"group": "product", "box": "0,0,0.5,0.5"},
                      timeout=60).json()
    assert whole["hits"] and part["hits"] and whole["hits"][0]["score"] != part["hits"][0]["score"]
    for box, words in (("0.5,0,0.4,1", "left < right"), ("1,2", "give four numbers")):
        r = httpx.post(url + "/api/v1/search/image", files=files, data={"box": box}, timeout=60)
        assert r.status_code == 422 and words in r.text, r.text


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "words"), [
    ("get", "/api/v1/search", {"params": {"q": "x", "facet": "price"}}, 422, "price is a range"),
    ("post", "/api/v1/search", {"json": {"text": "x", "box": [0, 0, 1, 1]}}, 422, "send the image itself"),
    ("get", "/api/v1/search", {"params": {"q": "x", "where": "price<cheap"}}, 422, "needs a number"),
    ("get", "/api/v1/search", {"params": {"q": "x", "group": "colour"}}, 422, "product"),
    ("post", "/api/v1/search", {"json": {"text": "x", "product_id": "P-CAT"}}, 422, "group the results by product"),
    ("get", "/api/v1/products/P-NOPE/similar", {}, 404, "P-NOPE"),
])
def test_api_product_errors_say_what_to_change(shop_site, method, path, kwargs, status, words):
    url, _ = shop_site
    r = getattr(httpx, method)(url + path, timeout=60, **kwargs)
    assert r.status_code == status, r.text
    assert words in json.dumps(r.json())
