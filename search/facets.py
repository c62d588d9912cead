"""Facet counts: how many of a search's products have each brand, category or attribute value, so a shop page can
offer them as filters. Counted over the products the best hits show (a vector search matches everything, so
"all matches" would count the whole catalogue)."""

from __future__ import annotations

import json
from collections import Counter

from sqlalchemy import select

from vlsearch.library import Library
from vlsearch.library.schema import Product
from vlsearch.library.sql import in_chunks
from vlsearch.search.conditions import FIELDS
from vlsearch.search.grouping import products_by_image
from vlsearch.search.query import SearchHit
from vlsearch.search.tags import tags_of

FACET_DEPTH = 200  # products counted: the best hits' products, however deep the page
MAX_VALUES = 50  # values per facet, the most frequent first
NOT_FACETS = ("id", "title", "description", "url", "price")  # unique or continuous: nothing to count
TAGS = "tags"  # the facet of the best hits' images' tags (search/tags.py), not a product field


def facet_counts(library: Library, hits: list[SearchHit], names: list[str]) -> dict[str, dict[str, int]]:
    """name -> {value: products} over the products `hits` show (a hit's own product when grouped); for `tags`,
    {tag: images} over the best hits' images."""
    counts: dict[str, Counter] = {name: Counter() for name in names}
    if TAGS in counts:
        for labels in tags_of(library, [h.id for h in hits[:FACET_DEPTH]]).values():
            counts[TAGS].update(labels)
    names = [name for name in names if name != TAGS]
    product_ids = list(dict.fromkeys(_products_of(library, hits)))[:FACET_DEPTH] if names else []
    with library.session() as s:
        for chunk in in_chunks(product_ids):
            for product in s.scalars(select(Product).where(Product.id.in_(chunk))):
                attributes = json.loads(product.attributes or "{}")
                for name in names:
                    value = getattr(product, name) if name in FIELDS else attributes.get(name)
                    if value is not None and not isinstance(value, (dict, list)):
                        counts[name][str(value)] += 1
    return {name: dict(c.most_common(MAX_VALUES)) for name, c in counts.items()}


def check_facet(name: str) -> str:
    """A facet name as asked for, lower-cased; ValueError for one that cannot be counted."""
    name = name.strip().lower()
    if not name or name in NOT_FACETS:
        raise ValueError(f"{name!r} cannot be a facet: count brand, category, currency, an attribute or tags "
                         "(price is a range: filter it with price<N)")
    return name


def _products_of(library: Library, hits: list[SearchHit]) -> list[str]:
    if all(h.product is not None for h in hits):
        return [h.product.id for h in hits]
    with library.session() as s:
        shown = products_by_image(s, [h.id for h in hits])
    return [p for h in hits for p in shown.get(h.id, ())]
