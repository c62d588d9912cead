"""Image hits grouped into product hits: a product ranks by its best-matching image, which stands for it (with the
product attached). An image no product shows is not a product hit. An image several products show stands for each
of them that meets the search's conditions (and, for a keyword search, whose own words or the image's match), the
product it is the main picture of first."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from vlsearch.library import Library
from vlsearch.library.schema import PRODUCT_TEXT_TABLE, TEXT_TABLE, Product, ProductImage
from vlsearch.library.sql import in_chunks
from vlsearch.search.conditions import Condition
from vlsearch.search.keywords import KeywordQuery
from vlsearch.search.query import ProductInfo, SearchHit


def group_by_product(library: Library, hits: list[SearchHit], leave_out: str | None = None,
                     where: tuple[Condition, ...] = (), words: KeywordQuery | None = None) -> list[SearchHit]:
    """One hit per product, best first, from image hits ranked best first. `leave_out`: a product not to return;
    `where`: conditions each product must meet; `words`: a keyword search's words (see the module's docstring)."""
    with library.session() as s:
        shown = products_by_image(s, [h.id for h in hits], where)
        if words is not None and not words.empty:
            shown = _matching_words(s, shown, words)
        order = list(dict.fromkeys(p for h in hits for p in shown.get(h.id, ()) if p != leave_out))
        info = load_products(s, order)
    best: dict[str, SearchHit] = {}
    for hit in hits:
        for product_id in shown.get(hit.id, ()):
            if product_id in info and product_id not in best:
                best[product_id] = replace(hit, product=info[product_id])
    return [best[p] for p in order if p in best]


def products_by_image(session: Session, image_ids: list[int],
                      where: tuple[Condition, ...] = ()) -> dict[int, list[str]]:
    """image id -> the products it shows that meet `where`, those it is the main picture of first."""
    out: dict[int, list[str]] = {}
    stmt = (select(ProductImage.image_id, ProductImage.product_id).join(Product, Product.id == ProductImage.product_id)
            .where(*(c.clause() for c in where)).order_by(ProductImage.position, ProductImage.product_id))
    for chunk in in_chunks(image_ids):
        for image_id, product_id in session.execute(stmt.where(ProductImage.image_id.in_(chunk))):
            out.setdefault(image_id, []).append(product_id)
    return out


def _matching_words(session: Session, shown: dict[int, list[str]], words: KeywordQuery) -> dict[int, list[str]]:
    """Of each image's products, those the words are about: all of them where the image's own words (file name,
    caption, OCR text) match, else those whose own words (title, brand, category, description) do."""
    expression = words.expressions()[-1]  # the loosest: it found these images
    own: set[int] = set()
    for chunk in in_chunks(list(shown)):
        ids = ", ".join(str(int(i)) for i in chunk)
        own.update(session.scalars(text(f"SELECT rowid FROM {TEXT_TABLE} WHERE {TEXT_TABLE} MATCH :q "
                                        f"AND rowid IN ({ids})"), {"q": "{name caption ocr} : (" + expression + ")"}))
    candidates = list({p for products in shown.values() for p in products})
    about: set[str] = set()
    for chunk in in_chunks(candidates):
        about.update(session.scalars(
            select(Product.id).where(Product.id.in_(chunk), text(
                f"products.rowid IN (SELECT rowid FROM {PRODUCT_TEXT_TABLE} WHERE {PRODUCT_TEXT_TABLE} MATCH :w)"))
            .params(w=expression)))
    return {image: products if image in own else [p for p in products if p in about]
            for image, products in shown.items()}


def load_products(session: Session, ids: list[str]) -> dict[str, ProductInfo]:
    images = (select(func.count(ProductImage.image_id)).where(ProductImage.product_id == Product.id)
              .correlate(Product).scalar_subquery())
    out: dict[str, ProductInfo] = {}
    for chunk in in_chunks(ids):
        for p, images_n in session.execute(select(Product, images).where(Product.id.in_(chunk))):
            out[p.id] = ProductInfo(id=p.id, title=p.title, description=p.description, brand=p.brand,
                                    category=p.category, price=p.price, currency=p.currency, url=p.url,
                                    attributes=json.loads(p.attributes or "{}"), images=int(images_n))
    return out


def product_vector(library: Library, model: str, product_id: str) -> np.ndarray:
    """The normalised mean of a product's image vectors: every picture of it counts. LookupError when the
    library has no such product, or none of its images is indexed."""
    with library.session() as s:
        if s.get(Product, product_id) is None:
            raise LookupError(f"product {product_id!r} is not in the library")
    _, vectors = library.load_vectors(model, sorted(images_of(library, product_id)))
    if not len(vectors):
        raise LookupError(f"product {product_id!r} has no indexed image (with vectors from {model})")
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def images_of(library: Library, product_id: str) -> set[int]:
    with library.session() as s:
        return set(s.scalars(select(ProductImage.image_id).where(ProductImage.product_id == product_id,
                                                                 ProductImage.image_id.is_not(None))))
