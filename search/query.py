"""What a search asks for: what to look for (text, image, negatives, weights) and where (filters)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime

from PIL import Image

from vlsearch.images.geometry import check_box
from vlsearch.search.conditions import Condition

MODES = ("vector", "keyword", "hybrid")
GROUPS = ("product",)


@dataclass(frozen=True)
class Filters:
    """Conditions a hit must meet, applied in SQL together with the vector search."""

    path_prefix: str | None = None
    after: datetime | None = None
    before: datetime | None = None
    camera: str | None = None
    min_score: float | None = None
    where: tuple[Condition, ...] = ()  # on the products an image shows (search/conditions.py)
    tags: tuple[str, ...] = ()  # tags an image must all carry (search/tags.py), compared without case

    def __post_init__(self) -> None:
        _require_text("the camera filter", self.camera)
        _require_text("the path filter", self.path_prefix)
        for tag in self.tags:
            _require_text("a tag", tag)
        if self.path_prefix and "\x00" in self.path_prefix:
            raise ValueError("the path filter contains a NUL character, which no file path can hold")
        if self.min_score is not None and math.isnan(self.min_score):
            raise ValueError("min_score must be a number (a similarity from -1 to 1), not NaN")

    @property
    def empty(self) -> bool:
        return not (self.path_prefix or self.after or self.before or self.camera or self.where or self.tags)


@dataclass(frozen=True)
class SearchQuery:
    """Text, an image, or both; their vectors are weighted, summed, minus the negatives, and normalised."""

    text: str | None = None
    image: Image.Image | None = None
    image_id: int | None = None  # an indexed image: its stored vector is used, and it is left out of the hits
    negatives: tuple[str, ...] = ()
    text_weight: float = 1.0
    image_weight: float = 1.0
    negative_weight: float = 0.5
    k: int = 20
    filters: Filters = field(default_factory=Filters)
    sort: str = "score"  # or "date": the top k by score, shown newest first
    mode: str = "vector"  # vector (CLIP), keyword (file names, captions, OCR text) or hybrid (both, fused)
    rerank: int = 0  # rescore this many top candidates with an image-text matching model
    group: str | None = None  # "product": hits are products, each by its best-matching image
    product_id: str | None = None  # a product: its images' mean vector is used, and it is left out of the hits
    box: tuple[float, float, float, float] | None = None  # search with this region of `image` only (fractions)

    def __post_init__(self) -> None:
        _require_text("the query text", self.text)
        for negative in self.negatives:
            _require_text("a not-term", negative)
        if not all(math.isfinite(w) for w in (self.text_weight, self.image_weight, self.negative_weight)):
            raise ValueError("weights must be finite numbers")
        has_text = bool(self.text and self.text.strip())
        if not has_text and self.image is None and self.image_id is None and self.product_id is None:
            raise ValueError("a search needs text, an image, or both")
        if self.group is not None and self.group not in GROUPS:
            raise ValueError(f"group must be one of {', '.join(GROUPS)}, not {self.group!r}")
        if self.product_id is not None and self.group != "product":
            raise ValueError("products like a product are products: group the results by product")
        if self.box is not None and self.image is None:
            raise ValueError("a box marks a region of the query image: send the image itself with it")
        if self.box is not None:
            check_box(self.box)
        if self.group and self.rerank:
            raise ValueError("a rerank scores images, and grouped results are products: drop one of the two")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "keyword" and (self.image is not None or self.image_id is not None or self.product_id):
            raise ValueError("keyword mode matches words only: drop the image, or switch to hybrid or vector mode")
        if self.mode == "keyword" and not has_text:
            raise ValueError("keyword mode looks for words: give some text (or switch to vector mode to search by "
                             "an image)")
        if self.mode == "keyword" and (self.negatives or self.filters.min_score is not None):
            raise ValueError("not-terms and a minimum score act on CLIP similarity, which keyword mode does not use: "
                             "switch to vector mode (or hybrid, where they shape the vector ranking)")
        if self.rerank < 0:
            raise ValueError("rerank must be 0 (off) or a number of candidates")
        if self.rerank and not has_text:
            raise ValueError("a rerank matches the query's words against the images: give some text")
        if self.k < 1:
            raise ValueError("k must be at least 1")
        if self.sort not in ("score", "date"):
            raise ValueError(f"sort must be 'score' or 'date', not {self.sort!r}")


def _require_text(what: str, value: str | None) -> None:
    """Text that SQLite and the tokenizer can take: a lone UTF-16 surrogate (from a JSON escape or a broken
    client) is no character at all, and would fail deep inside them with an encoding error."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} contains an invalid character (a lone surrogate); send UTF-8 text") from None


@dataclass(frozen=True)
class SearchHit:
    id: int
    path: str
    score: float
    width: int | None
    height: int | None
    taken_at: datetime | None
    camera: str | None
    thumbnail: str | None
    caption: str | None = None
    ocr_text: str | None = None
    match_score: float | None = None  # P(query text describes the image), when the hits were reranked
    product: ProductInfo | None = None  # grouped by product: the product this image is the best match of

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "path": self.path,
            "score": round(self.score, 6),
            "width": self.width,
            "height": self.height,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
            "camera": self.camera,
            "thumbnail": self.thumbnail,
            "caption": self.caption,
            "ocr_text": self.ocr_text,
            "match_score": None if self.match_score is None else round(self.match_score, 6),
            **({"product": self.product.as_dict()} if self.product is not None else {}),
        }


@dataclass(frozen=True)
class ProductInfo:
    """A catalogue product as a hit carries it."""

    id: str
    title: str | None = None
    description: str | None = None
    brand: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    url: str | None = None
    attributes: dict = field(default_factory=dict)
    images: int = 0  # how many indexed images it has

    def as_dict(self) -> dict:
        return asdict(self)
