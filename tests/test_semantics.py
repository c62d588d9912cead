"""The `offline` preset on real photographs (the ones scikit-image and scikit-learn ship): real weights,
real meaning, no network."""

from pathlib import Path

import pytest
from PIL import ImageOps

from vlsearch.encoders import load_encoder
from vlsearch.images.samples import write_samples
from vlsearch.indexer import Indexer
from vlsearch.library import Library
from vlsearch.search import SearchEngine, SearchQuery


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("semantics")
    photos = root / "photos"
    write_samples(photos)
    encoder = load_encoder("offline", model_dir=root / "models", device="cpu")
    lib = Library.open(root / "lib")
    report = Indexer(lib, encoder, batch_size=8, workers=2).run([photos])
    assert report.errors == 0 and report.embedded >= 15
    return SearchEngine(lib, encoder), photos


def top(engine, **query) -> str:
    return Path(engine.search(SearchQuery(k=3, **query))[0].path).stem


def test_a_cat_finds_chelsea_first(engine):
    assert top(engine[0], text="a cat") == "chelsea"


def test_a_cup_of_coffee_finds_coffee_first(engine):
    assert top(engine[0], text="a cup of coffee") == "coffee"


def test_more_words_that_mean_something(engine):
    assert top(engine[0], text="a rocket launch") == "rocket"
    assert top(engine[0], text="flowers") == "flower"


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket", "china"])
def test_cropped_mirrored_copy_finds_its_original_first(engine, name, tmp_path):
    search, photos = engine
    original = photos / f"{name}.jpg"
    from PIL import Image

    with Image.open(original) as im:
        w, h = im.size
        variant = ImageOps.mirror(im.crop((w // 10, h // 10, w - w // 10, h - h // 12)))
        path = tmp_path / f"variant-{name}.jpg"
        variant.save(path, quality=85)
    hits = search.similar(path, k=3)
    assert Path(hits[0].path) == original
