"""Product conditions as SQL (attribute values as text and as numbers), the sampled estimate of the share they admit,
and the search plan built on it: a narrow condition over an IVF index still finds the exact best products."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
from sqlalchemy import insert, select

from bench.index_choice import make_mixture
from vlsearch.encoders import Encoder
from vlsearch.library import Library
from vlsearch.library.embeddings import encode_vector
from vlsearch.library.schema import Embedding, ImageRecord, Product, ProductImage
from vlsearch.search import Filters, SearchEngine, SearchQuery
from vlsearch.search.conditions import Condition, admitted_share
from vlsearch.search.engine import _first_passing, probe_factor

COLOURS = tuple(f"c{i}" for i in range(10))


def add_products(lib: Library, attributes: list[dict], prices: Sequence[float | None] | None = None) -> None:
    prices = prices or [None] * len(attributes)
    with lib.session() as s:
        s.execute(insert(Product.__table__), [
            {"id": f"p{i}", "attributes": json.dumps(a), "price": price, "seen_in": "test"}
            for i, (a, price) in enumerate(zip(attributes, prices, strict=True))])


def meeting(lib: Library, *conditions: str) -> set[str]:
    where = [Condition.parse(c).clause() for c in conditions]
    with lib.session() as s:
        return set(s.scalars(select(Product.id).where(*where)))


@pytest.mark.parametrize(("condition", "expected"), [
    ("size=42", {"p0", "p1"}),  # the number 42 and the text "42"
    ("size=42.0", {"p0"}),  # numerically; the text "42" is not written "42.0"
    ("size=XL|s", {"p2", "p4"}),  # text compares case-insensitively
    ("size>42", {"p3"}),
    ("size<=42", {"p0"}),  # ranges compare numbers only
    ("size!=42", {"p2", "p3", "p4"}),  # a product without the attribute does not meet !=
    ("fit=slim", set()),
])
def test_attribute_values_compare_as_text_and_as_numbers(library, condition, expected):
    add_products(library, [{"size": 42}, {"size": "42"}, {"size": "xl"}, {"size": 42.5}, {"size": "S"}, {}])
    assert meeting(library, condition) == expected


def test_the_share_estimate_samples_across_a_sorted_catalogue(library):
    assert admitted_share_of(library, "colour=c0") == 0.0  # no products: nothing is admitted
    # Sorted by colour, as a catalogue export may be: c0 first, c9 last; prices rise along the table.
    n = 5000
    add_products(library, [{"colour": COLOURS[i * 10 // n]} for i in range(n)], [1 + i / 10 for i in range(n)])
    assert admitted_share_of(library, "colour=c0|c1|c2") == pytest.approx(0.3, abs=0.03)
    assert admitted_share_of(library, "colour=c9", "price<250") == 0.0
    assert admitted_share_of(library, "price<=50.9") == pytest.approx(0.1, abs=0.03)
    assert admitted_share_of(library, "fit=slim") == 0.0


def admitted_share_of(lib: Library, *conditions: str) -> float:
    with lib.session() as s:
        return admitted_share(s, tuple(Condition.parse(c) for c in conditions))


def test_the_first_passing_candidates_are_kept_in_rank_order(library):
    with library.session() as s:
        s.execute(insert(ImageRecord.__table__), [
            {"id": i, "path": f"/x/{i}.jpg", "sha256": f"{i:064x}", "size": 1, "mtime": 1.0, "width": 1,
             "height": 1, "status": "ok" if i % 7 == 0 else "error"} for i in range(1, 2001)])
        passing = select(ImageRecord.id).where(ImageRecord.status == "ok")
        ranked = list(range(2000, 0, -1))  # best first: the highest ids
        assert _first_passing(s, passing, ranked, 5) == [1995, 1988, 1981, 1974, 1967]
        assert _first_passing(s, passing, ranked, 1000) == [i for i in ranked if i % 7 == 0]  # fewer pass
        assert _first_passing(s, passing, [], 5) == []


def test_narrower_conditions_probe_more_lists():
    assert [probe_factor(s) for s in (1.0, 0.3, 0.1, 0.03, 0.0)] == [1, 1, 2, 4, 4]


class FixedVector(Encoder):
    """Answers every text with `answer`: the search plan under test, on vectors whose exact answer is known."""

    name, device = "synthetic", "cpu"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.answer = np.zeros(dim, dtype=np.float32)

    @property
    def preprocess(self):
        raise NotImplementedError

    def encode_image_tensors(self, batch):
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.repeat(self.answer[None], len(texts), axis=0)


def test_a_narrow_condition_over_an_ivf_index_finds_the_exact_best_products(library):
    """3,000 products x 3 images; price<60 and colour=c0|c1|c2 admits ~3.5%: the search starts deep in the index
    and probes more of its lists, and returns the exact 10 best products (numpy over every vector)."""
    products, per, dim = 3000, 3, 64
    vectors, queries = make_mixture(products * per, 12, dim, seed=3, n_clusters=60, noise=0.7, iso_noise=0.3, rank=16,
                                    mean_scale=1.0)
    vectors = vectors.astype(np.float16).astype(np.float32)
    rng = np.random.default_rng(5)
    colours, prices = rng.integers(0, 10, products), rng.uniform(1, 500, products)
    library.ensure_model("synthetic", dim)
    with library.session() as s:
        s.execute(insert(ImageRecord.__table__), [
            {"id": i + 1, "path": f"/x/{i}.jpg", "sha256": f"{i:064x}", "size": 1, "mtime": 1.0, "width": 1,
             "height": 1, "status": "ok"} for i in range(products * per)])
        s.execute(insert(Embedding.__table__), [
            {"image_id": i + 1, "model": "synthetic", "vector": encode_vector(v)} for i, v in enumerate(vectors)])
        Library.bump_generation(s, "synthetic")
    add_products(library, [{"colour": COLOURS[c]} for c in colours], list(prices))
    with library.session() as s:
        s.execute(insert(ProductImage.__table__), [
            {"product_id": f"p{p}", "position": j, "ref": f"/x/{per * p + j}.jpg", "image_id": per * p + j + 1}
            for p in range(products) for j in range(per)])
    index = library.rebuild_index("synthetic", "ivf")
    index.tune({"nprobe": 12})  # 5% of its 230 lists, as a large library's guard picks (bench products: 108/2190)
    assert library.vector_index("synthetic") is index
    admitted = (prices < 60) & (colours < 3)
    where = tuple(Condition.parse(c) for c in ("price<60", "colour=c0|c1|c2"))
    encoder, found = FixedVector(dim), 0
    engine = SearchEngine(library, encoder)
    for query in queries:
        encoder.answer = query.astype(np.float32)
        best = (vectors @ query).reshape(products, per).max(axis=1)
        exact = {f"p{p}" for p in np.flatnonzero(admitted)[np.argsort(-best[admitted])[:10]]}
        hits = engine.search(SearchQuery(text="x", group="product", k=10, filters=Filters(where=where)))
        assert len(hits) == 10 and all(admitted[int(h.product.id[1:])] for h in hits)
        found += len(exact & {h.product.id for h in hits})
    assert found / (10 * len(queries)) >= 0.95
