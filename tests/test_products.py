"""Products (vlsearch products import, grouped search, conditions, similar products) on a real library: the tiny
model for the mechanics, the offline model's real weights for "a shopper's photo finds its product first"."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from sqlalchemy import select, text

from tests.products import PRODUCTS, append_rows, importer, write_catalogue
from tests.served import serving
from vlsearch.library import Library
from vlsearch.library.schema import Product, ProductImage
from vlsearch.search import Filters, SearchEngine, SearchQuery
from vlsearch.search.conditions import Condition


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_encoder):
    folder = tmp_path_factory.mktemp("shop")
    shoppers = write_catalogue(folder)
    lib = Library.open(folder / "lib")
    report = importer(lib, tiny_encoder).run(folder / "catalogue.csv")
    yield folder, lib, report, shoppers
    lib.close()


def products(lib: Library) -> dict[str, Product]:
    with lib.session() as s:
        return {p.id: p for p in s.scalars(select(Product))}


def images_of(lib: Library, product_id: str) -> list[tuple[str, int | None]]:
    with lib.session() as s:
        return [(r.ref.rsplit("/", 1)[-1], r.image_id) for r in s.scalars(
            select(ProductImage).where(ProductImage.product_id == product_id).order_by(ProductImage.position))]


def test_a_catalogue_becomes_products_with_indexed_images(shop):
    _, lib, report, _ = shop
    assert (report.rows, report.new, report.updated, report.problem_count) == (14, 7, 0, 0)
    assert report.images == 14 and report.unlinked == 0 and report.indexed.embedded == 14
    got = products(lib)
    assert set(got) == set(PRODUCTS)
    cat = got["P-CAT"]
    assert (cat.title, cat.brand, cat.category, cat.price, cat.currency) == ("Tabby cat cushion", "Purrfect", "home",
                                                                             19.5, "EUR")
    assert json.loads(cat.attributes) == {"colour": "orange"}
    # Its second row added two pictures, one of them the coffee cups' photo: an image may show two products.
    assert [name for name, _ in images_of(lib, "P-CAT")] == ["chelsea.jpg", "chelsea-detail.jpg", "coffee.jpg"]
    assert all(image_id is not None for _, image_id in images_of(lib, "P-CAT"))
    assert images_of(lib, "P-CAT")[2][1] == images_of(lib, "P-COFFEE")[0][1]


def test_product_words_are_in_the_keyword_index(shop, tiny_encoder):
    _, lib, _, _ = shop
    engine = SearchEngine(lib, tiny_encoder)
    hits = engine.search(SearchQuery(text="tabby cushion", mode="keyword", group="product"))
    assert [h.product.id for h in hits] == ["P-CAT"]
    brand = engine.search(SearchQuery(text="acme", mode="keyword", group="product", k=10))
    # The coffee cups' photo is P-CAT's too, but ACME's words are P-COFFEE's: a shared image stands for the products
    # the words are about.
    assert {h.product.id for h in brand} == {"P-ASTRO", "P-COFFEE"}
    images = engine.search(SearchQuery(text="acme", mode="keyword", k=10))
    assert {h.path.rsplit("/", 1)[-1] for h in images} == {"astronaut.jpg", "astronaut-detail.jpg", "coffee.jpg",
                                                           "coffee-detail.jpg"}


def test_grouped_search_returns_each_product_once_by_its_best_image(shop, tiny_encoder):
    _, lib, _, _ = shop
    engine = SearchEngine(lib, tiny_encoder)
    images = engine.search(SearchQuery(text="a photo", k=100))
    grouped = engine.search(SearchQuery(text="a photo", k=100, group="product"))
    assert len(images) == 14 and len(grouped) == 7
    assert len({h.product.id for h in grouped}) == 7
    scores = [h.score for h in grouped]
    assert scores == sorted(scores, reverse=True)
    for hit in grouped:  # the image standing for a product is its best-scoring one
        own = {image_id for _, image_id in images_of(lib, hit.product.id)}
        assert hit.id == next(h.id for h in images if h.id in own)
        assert hit.product.images == len(own) and hit.as_dict()["product"]["id"] == hit.product.id
    assert len(engine.search(SearchQuery(text="a photo", k=3, group="product"))) == 3


@pytest.mark.parametrize(("conditions", "expected"), [
    (["category=posters"], {"P-ASTRO", "P-ROCKET", "P-CHINA"}),
    (["category=POSTERS", "price<50"], {"P-ASTRO", "P-ROCKET"}),
    (["price>=19.5", "price<=45"], {"P-ASTRO", "P-CAT", "P-COFFEE"}),
    (["brand=acme|orbit"], {"P-ASTRO", "P-COFFEE", "P-ROCKET", "P-CHINA"}),
    (["brand!=acme|orbit"], {"P-CAT", "P-HORSE", "P-FLOWER"}),
    (["colour=white"], {"P-ASTRO", "P-COFFEE"}),
    (["colour=purple"], set()),
    (["material=wood"], set()),  # an attribute no product has
])
def test_conditions_narrow_the_products(shop, tiny_encoder, conditions, expected):
    _, lib, _, _ = shop
    engine = SearchEngine(lib, tiny_encoder)
    where = tuple(Condition.parse(c) for c in conditions)
    hits = engine.search(SearchQuery(text="a photo", k=50, group="product", filters=Filters(where=where)))
    assert {h.product.id for h in hits} == expected


def test_conditions_explain_what_is_wrong():
    for bad, words in (("category", "should read"), ("price<cheap", "needs a number"), ('na"me=x', "should read"),
                       ("price<", "should read"), ("brand<3", "brand is text")):
        with pytest.raises(ValueError, match=words):
            Condition.parse(bad)


def test_similar_products_use_every_image_and_leave_the_product_out(shop, tiny_encoder):
    _, lib, _, _ = shop
    engine = SearchEngine(lib, tiny_encoder)
    hits = engine.search(SearchQuery(product_id="P-ROCKET", group="product", k=10))
    assert "P-ROCKET" not in {h.product.id for h in hits} and len(hits) == 6
    rocket_images = {image_id for _, image_id in images_of(lib, "P-ROCKET")}
    assert not rocket_images & {h.id for h in hits}
    with pytest.raises(LookupError, match="P-NOPE"):
        engine.search(SearchQuery(product_id="P-NOPE", group="product"))


def test_a_second_import_changes_what_changed_and_prune_forgets_the_rest(tmp_path, tiny_encoder):
    write_catalogue(tmp_path)
    lib = Library.open(tmp_path / "lib")
    importer(lib, tiny_encoder).run(tmp_path / "catalogue.csv")
    again = importer(lib, tiny_encoder).run(tmp_path / "catalogue.csv")
    assert (again.new, again.updated, again.pruned) == (0, 7, 0) and again.indexed.embedded == 0
    assert [n for n, _ in images_of(lib, "P-CAT")] == ["chelsea.jpg", "chelsea-detail.jpg", "coffee.jpg"]

    rows = (tmp_path / "catalogue.csv").read_text().splitlines()
    kept = [rows[0], *(r.replace("Tabby cat cushion", "Tabby cat pillow") for r in rows[1:] if "P-HORSE" not in r)]
    (tmp_path / "catalogue.csv").write_text("\n".join(kept) + "\n")
    pruned = importer(lib, tiny_encoder, prune=True).run(tmp_path / "catalogue.csv")
    assert pruned.pruned == 1 and "P-HORSE" not in products(lib)
    assert products(lib)["P-CAT"].title == "Tabby cat pillow"
    with lib.session() as s:  # the keyword index follows the product's new title
        assert s.execute(text("SELECT count(*) FROM image_text WHERE image_text MATCH 'pillow'")).scalar() == 3
    lib.close()


def test_bad_rows_are_reported_by_line_and_the_rest_imported(tmp_path, tiny_encoder):
    write_catalogue(tmp_path)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    append_rows(tmp_path / "catalogue.csv",
                ",no id here,,,1,,photos/coffee.jpg,",
                "P-BAD,Bad price,,,cheap,,photos/coffee.jpg,",
                "P-BROKEN,Broken picture,,,1,,photos/broken.jpg|photos/missing.jpg,")
    lib = Library.open(tmp_path / "lib")
    report = importer(lib, tiny_encoder).run(tmp_path / "catalogue.csv")
    problems = {(p.line, p.message.split(":")[0]) for p in report.problems}
    assert report.new == 8 and report.problem_count == 4 and report.unlinked == 2
    assert (16, "no product_id") in problems
    assert any(line == 17 and "price" in message for line, message in problems)
    broken = [p for p in report.problems if p.line == 18]
    assert len(broken) == 2 and {p.message.split(":")[0] for p in broken} == {
        f"image {tmp_path / 'photos' / 'broken.jpg'}", f"image {tmp_path / 'photos' / 'missing.jpg'}"}
    assert "P-BROKEN" in products(lib) and all(i is None for _, i in images_of(lib, "P-BROKEN"))
    lib.close()


def test_pictures_given_as_urls_are_fetched_indexed_and_linked(tmp_path, tiny_encoder):
    """A catalogue whose pictures are on a web server (a real one, on localhost): each is fetched and indexed
    under its URL; one that answers 404 is a problem on its row's line."""
    write_catalogue(tmp_path)
    with serving(tmp_path / "photos") as base:
        (tmp_path / "web.csv").write_text(
            "product_id,title,image\n"
            f"W-ROCKET,Rocket print,{base}/rocket.jpg|{base}/rocket-detail.jpg\n"
            f"W-GONE,Gone,{base}/nowhere.jpg\n")
        lib = Library.open(tmp_path / "lib")
        report = importer(lib, tiny_encoder).run(tmp_path / "web.csv")
    assert (report.new, report.images, report.unlinked) == (2, 3, 1)
    assert [p.line for p in report.problems] == [3]
    assert report.problems[0].message.startswith(f"image {base}/nowhere.jpg: ") and "404" in report.problems[0].message
    linked = images_of(lib, "W-ROCKET")
    assert [name for name, _ in linked] == ["rocket.jpg", "rocket-detail.jpg"] and all(i for _, i in linked)
    hits = SearchEngine(lib, tiny_encoder).search(SearchQuery(image_id=linked[0][1], group="product"))
    assert [h.product.id for h in hits] == ["W-ROCKET"]  # its other picture; W-GONE has none
    lib.close()


def test_a_shoppers_photo_finds_its_product_first_with_real_weights(tmp_path):
    """The offline model's real ImageNet weights: a mirrored, cropped, recompressed photo of each product."""
    from vlsearch.encoders import load_encoder

    encoder = load_encoder("offline", model_dir=tmp_path / "models", device="cpu")
    shoppers = write_catalogue(tmp_path)
    lib = Library.open(tmp_path / "lib")
    importer(lib, encoder).run(tmp_path / "catalogue.csv")
    engine = SearchEngine(lib, encoder)
    for product_id, photo in shoppers.items():
        hits = engine.search(SearchQuery(image=Image.open(io.BytesIO(photo)), group="product", k=3))
        assert hits[0].product.id == product_id, (product_id, [h.product.id for h in hits])
    # Two products in one photo, side by side: a box around either finds it (the whole photo finds one of them).
    left, right = (Image.open(io.BytesIO(shoppers[p])).convert("RGB").resize((320, 320)) for p in ("P-CAT", "P-ROCKET"))
    both = Image.new("RGB", (640, 320))
    both.paste(left, (0, 0))
    both.paste(right, (320, 0))
    for box, product_id in (((0.0, 0.0, 0.5, 1.0), "P-CAT"), ((0.5, 0.0, 1.0, 1.0), "P-ROCKET")):
        hits = engine.search(SearchQuery(image=both, box=box, group="product", k=3))
        assert hits[0].product.id == product_id, (box, [h.product.id for h in hits])
    lib.close()


@pytest.mark.parametrize(("box", "words"), [((0.5, 0.0, 0.4, 1.0), "left < right"), ((0, 0, 1, 1.5), "<= 1"),
                                            ((0, 0, 1), "four numbers")])
def test_a_box_must_be_a_region_of_the_image(box, words):
    with pytest.raises(ValueError, match=words):
        SearchQuery(image=Image.new("RGB", (8, 8)), box=box)
    with pytest.raises(ValueError, match="send the image itself"):
        SearchQuery(text="shoes", box=(0, 0, 1, 1))
