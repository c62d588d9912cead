"""query -> encode -> FAISS top-k -> filter in SQL (widening until k survive) -> hydrate; keyword search over
captions, OCR text and file names, fused with the vector ranking in hybrid mode; optional ITM rerank."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import Select, func, select

from vlsearch.captioner import ImageTextModel, ModelMissing
from vlsearch.encoders import Encoder
from vlsearch.images import DecodeError, decode_file
from vlsearch.images.geometry import crop_box
from vlsearch.library import ImageRecord, Library
from vlsearch.library.records import under_any
from vlsearch.library.schema import Caption, OcrText, Root
from vlsearch.library.sql import IN_CHUNK, in_chunks
from vlsearch.search.conditions import admitted_image_ids, admitted_images, admitted_share, few_products
from vlsearch.search.grouping import group_by_product, images_of, product_vector
from vlsearch.search.keywords import SQLITE_MAX_INT, KeywordQuery, keyword_ranking, reciprocal_rank_fusion
from vlsearch.search.query import Filters, SearchHit, SearchQuery
from vlsearch.search.tags import tagged

FIRST_FETCH = 4  # over-fetch factor for the first FAISS call when filters may drop candidates
MIN_SHARE = 0.01  # the least share of products a product condition is assumed to admit when sizing that call
FEW_PRODUCTS = 2000  # a product condition admitting at most this many products is answered exactly at once
ANN_ROUNDS = 3  # widenings of the index search before a product condition is answered exactly (if it admits few)
# A filter admitting at most this many images is answered by scoring all of them: exact, and ~10 ms of numpy.
EXACT_FILTER_LIMIT = 20_000
# Hybrid mode fuses this many candidates from each ranking (more when k is larger). Fixed, not grown with the
# page: a fused score depends on the depth, so pages of one query must come from one fusion (the API's hybrid
# and date-sorted pages reach this deep and no further).
FUSION_DEPTH = 1000
RERANK_CHUNK = 16  # images decoded and scored together by the matching model
RERANK_SIDE = 768  # long side rerank images are shrunk to at once: BLIP looks at 384 px, this leaves room


class SearchEngine:
    """Answers text, image and combined queries over one library with the encoder its vectors came from."""

    def __init__(self, library: Library, encoder: Encoder, max_stale_s: float = 0.0,
                 matcher: ImageTextModel | None = None) -> None:
        """`max_stale_s`: see Library.vector_index; a server sets it so concurrent indexing stays cheap.
        `matcher`: an image-text matching model, needed for queries that ask for a rerank."""
        library.require_model(encoder.name)  # a library queried with another model's vectors is an error
        self.library = library
        self.encoder = encoder
        self.max_stale_s = max_stale_s
        self.matcher = matcher

    def query_vector(self, query: SearchQuery) -> np.ndarray:
        parts: list[np.ndarray] = []
        if query.text and query.text.strip():
            parts.append(query.text_weight * self.encoder.encode_texts([query.text])[0])
        if query.image is not None:
            image = crop_box(query.image, query.box) if query.box is not None else query.image
            parts.append(query.image_weight * self.encoder.encode_images([image])[0])
        if query.image_id is not None:
            parts.append(query.image_weight * self.stored_vector(query.image_id))
        if query.product_id is not None:
            parts.append(query.image_weight * product_vector(self.library, self.encoder.name, query.product_id))
        vector = np.sum(parts, axis=0)
        if query.negatives:
            vector = vector - query.negative_weight * self.encoder.encode_texts(list(query.negatives)).sum(axis=0)
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm):  # weights so large the sum overflows: every score would be NaN
            raise ValueError("the query's weights are too large to combine; use weights between -10 and 10")
        if norm == 0:
            raise ValueError("the query's parts cancel out; change the weights or the negative terms")
        return (vector / norm).astype(np.float32)

    def stored_vector(self, image_id: int) -> np.ndarray:
        if not 1 <= image_id <= SQLITE_MAX_INT:  # no such row, and SQLite could not even be asked about it
            raise LookupError(f"image {image_id} is not in the library")
        ids, vectors = self.library.load_vectors(self.encoder.name, [image_id])
        if not len(ids):
            raise LookupError(f"image {image_id} is not in the library (or has no vector from {self.encoder.name})")
        return vectors[0]

    def search(self, query: SearchQuery) -> list[SearchHit]:
        if query.rerank and self.matcher is None:
            raise ModelMissing("a rerank needs an image-text matching model", "match")
        exclude = {query.image_id} if query.image_id is not None else set()
        k = max(query.k, query.rerank)
        hits = self._grouped(query, k, exclude) if query.group == "product" else self._ranked(query, k, exclude)
        if query.rerank:
            hits = self._rerank(query.text or "", hits, query.rerank)
        hits = hits[: query.k]
        if query.sort == "date":
            hits.sort(key=lambda h: h.taken_at or datetime.min, reverse=True)
        return hits

    def _ranked(self, query: SearchQuery, k: int, exclude: set[int]) -> list[SearchHit]:
        """The best k images for the query's mode."""
        if query.mode == "keyword":
            return self._keyword(KeywordQuery.parse(query.text or ""), k, query.filters, exclude)
        if query.mode == "hybrid" and query.text and not KeywordQuery.parse(query.text).empty:
            return self._hybrid(query, k, exclude)
        return self._nearest(self.query_vector(query), k, query.filters, exclude)

    def _grouped(self, query: SearchQuery, k: int, exclude: set[int]) -> list[SearchHit]:
        """The best k products: image hits grouped by product, fetching deeper until k products are found (or the
        images run out). Products like a product leave out its own images and itself."""
        if query.product_id is not None:
            exclude = exclude | images_of(self.library, query.product_id)
        fetch = 2 * k  # most products are found by their best image or two
        words = KeywordQuery.parse(query.text or "") if query.mode == "keyword" else None
        while True:
            images = self._ranked(query, fetch, exclude)
            products = group_by_product(self.library, images, query.product_id, query.filters.where, words)
            if len(products) >= k or len(images) < fetch:
                return products[:k]
            fetch *= 4

    def _keyword(self, query: KeywordQuery, k: int, filters: Filters, exclude: set[int]) -> list[SearchHit]:
        """Best bm25 matches that pass the filters, widening the FTS fetch until k survive."""
        fetch = (k + len(exclude)) * (1 if filters.empty else FIRST_FETCH)
        while True:
            with self.library.session() as s:
                ranked = keyword_ranking(s, query, fetch)
            hits = self._hydrate([(i, sc) for i, sc in ranked if i not in exclude], filters)
            if len(hits) >= k or len(ranked) < fetch:
                return hits[:k]
            fetch *= 4

    def _hybrid(self, query: SearchQuery, k: int, exclude: set[int]) -> list[SearchHit]:
        """Reciprocal rank fusion of the vector and keyword rankings: an image high in either list, or in
        both, comes first; the hit's score is its fused score."""
        depth = max(k, FUSION_DEPTH)
        vector_hits = self._nearest(self.query_vector(query), depth, query.filters, exclude)
        keyword_hits = self._keyword(KeywordQuery.parse(query.text or ""), depth, query.filters, exclude)
        fused = reciprocal_rank_fusion([h.id for h in vector_hits], [h.id for h in keyword_hits])[:k]
        by_id = {h.id: h for h in keyword_hits} | {h.id: h for h in vector_hits}
        return [replace(by_id[image_id], score=score) for image_id, score in fused]

    def _rerank(self, text: str, hits: list[SearchHit], depth: int) -> list[SearchHit]:
        """Rescore the top `depth` hits by P(text describes image) from the matching model.

        Each file is shrunk as soon as it is decoded and scored RERANK_CHUNK at a time, so a deep rerank over
        camera-sized photos holds one full-size image and a chunk of small ones, not `depth` full-size images."""
        assert self.matcher is not None
        roots = self.indexed_roots()
        head, tail = hits[:depth], hits[depth:]
        reranked: list[SearchHit] = []
        unreadable: list[SearchHit] = []
        for start in range(0, len(head), RERANK_CHUNK):
            images, scored = [], []
            for hit in head[start : start + RERANK_CHUNK]:
                try:
                    image = self.decode_indexed(hit.path, roots)
                except DecodeError:  # changed, vanished or linked out since indexing: below the rescored ones
                    unreadable.append(hit)
                    continue
                image.thumbnail((RERANK_SIDE, RERANK_SIDE))
                images.append(image)
                scored.append(hit)
            if images:
                scores = self.matcher.match(images, [text] * len(images))
                reranked += [replace(h, match_score=float(sc)) for h, sc in zip(scored, scores, strict=True)]
        reranked.sort(key=lambda h: -(h.match_score or 0.0))
        return reranked + unreadable + tail

    def indexed_roots(self) -> list[Path] | None:
        """Real paths of the folders the library indexed (None for a library that recorded none)."""
        with self.library.session() as s:
            roots = [Path(os.path.realpath(p)) for p in s.scalars(select(Root.path))]
        return roots or None

    def decode_indexed(self, path: str, roots: list[Path] | None) -> Image.Image:
        """An indexed image's file, decoded for a rerank or a question, only while it lies inside `roots` (symlinks
        resolved): a file swapped since indexing for a link out of the indexed folders is not read, as the server
        would not serve it (its score would tell a client about a file it may not see). Raises DecodeError."""
        return decode_file(path, confine_to=roots)

    def similar(self, target: int | str | Path, k: int = 20, filters: Filters | None = None) -> list[SearchHit]:
        """Images like an indexed image (by id or path) or like any image file."""
        image_id = target if isinstance(target, int) else self._id_of_path(Path(target))
        if image_id is not None:
            return self.search(SearchQuery(image_id=image_id, k=k, filters=filters or Filters()))
        return self.search(SearchQuery(image=decode_file(Path(target)), k=k, filters=filters or Filters()))

    def _id_of_path(self, path: Path) -> int | None:
        with self.library.session() as s:
            return s.scalar(select(ImageRecord.id).where(ImageRecord.path == str(path.expanduser().resolve())))

    def _nearest(self, vector: np.ndarray, k: int, filters: Filters, exclude: set[int]) -> list[SearchHit]:
        """The k best images passing the filters. A filter on the files is tried exactly first (if it admits few
        images); so are product conditions on indexed fields admitting few products. Other product conditions
        search the index first, as deep as the share of products they admit (estimated from a sample) asks,
        widening ANN_ROUNDS times, then exactly if they admit few: counting what a condition on attributes admits
        cost 100 ms at 100k products (bench products), more than searching deeper does."""
        exact_first = not filters.empty and (not filters.where or self._few_products(filters))
        if exact_first and (hits := self._exact_within_filter(vector, k, filters, exclude)) is not None:
            return hits
        share = self._admitted_share(filters)
        index = self.library.vector_index(self.encoder.name, self.max_stale_s)
        total = index.ntotal
        fetch = k + len(exclude) if filters.empty else math.ceil((k + len(exclude)) * FIRST_FETCH / share)
        rounds = 0
        while True:
            rounds += 1
            # A product condition admitting few also searches more of an IVF index's lists, more each round: its
            # nearest products lie deeper, in lists the first probe skips (bench products, 3%: recall 0.94 -> 0.99).
            deeper = probe_factor(share) * 2 ** (rounds - 1) if filters.where else 1
            scores, ids = index.search(vector[None, :], min(fetch, total), probe_factor=deeper)
            pairs = [(int(i), float(sc)) for i, sc in zip(ids[0], scores[0], strict=True) if i >= 0]
            pairs = [(i, sc) for i, sc in pairs if i not in exclude]
            below_min = False  # hits come best first: once one falls below min_score, fetching deeper cannot help
            if filters.min_score is not None:
                kept = [(i, sc) for i, sc in pairs if sc >= filters.min_score]
                below_min, pairs = len(kept) < len(pairs), kept
            hits = self._hydrate(pairs, filters, limit=k)
            if len(hits) >= k or fetch >= total or below_min:
                return hits[:k]
            if filters.where and rounds == ANN_ROUNDS:  # a narrow condition: score what it admits, if few
                exact = self._exact_within_filter(vector, k, filters, exclude)
                if exact is not None:
                    return exact
            fetch *= 4

    def _admitted_share(self, filters: Filters) -> float:
        """The share of products the product conditions admit, estimated from a sample (1 without conditions);
        at least MIN_SHARE, so a condition the sample never met still starts at a bounded depth."""
        if not filters.where:
            return 1.0
        with self.library.session() as s:
            return max(admitted_share(s, filters.where), MIN_SHARE)

    def _few_products(self, filters: Filters) -> bool:
        """Whether the product conditions on indexed fields admit at most FEW_PRODUCTS products (a brand): then
        scoring their images beats widening (bench products: 10 against 53 ms p50 at 300k images)."""
        count = few_products(filters.where, FEW_PRODUCTS)
        if count is None:
            return False
        with self.library.session() as s:
            return s.scalar(count) <= FEW_PRODUCTS

    def _exact_within_filter(
        self, vector: np.ndarray, k: int, filters: Filters, exclude: set[int]
    ) -> list[SearchHit] | None:
        """Score every image the filter admits, when they are few: exact on any index kind (an approximate
        index only looks near the query, where a narrow filter may admit nothing). None when too many."""
        stmt = select(ImageRecord.id).where(*_filter_clauses(replace(filters, where=())))
        if filters.where:  # enumerated from the products' side: a selective condition uses its index
            stmt = stmt.where(ImageRecord.id.in_(admitted_image_ids(filters.where, EXACT_FILTER_LIMIT + 1)))
        with self.library.session() as s:  # counted in SQL: fetching 20,001 ids to count them took 40 ms
            if s.scalar(select(func.count()).select_from(stmt.limit(EXACT_FILTER_LIMIT + 1).subquery())) > \
                    EXACT_FILTER_LIMIT:
                return None
            matching = s.scalars(stmt).all()
        ids, vectors = self.library.load_vectors(self.encoder.name, [i for i in matching if i not in exclude])
        scores = vectors @ vector
        top = np.argsort(-scores)[:k]
        pairs = [(int(ids[j]), float(scores[j])) for j in top]
        if filters.min_score is not None:
            pairs = [(i, sc) for i, sc in pairs if sc >= filters.min_score]
        return self._hydrate(pairs, filters)

    def hits(self, pairs: list[tuple[int, float]], filters: Filters, limit: int | None = None) -> list[SearchHit]:
        """Hits for (image id, score) pairs found some other way, in their order, that pass the filters: the first
        `limit` of them."""
        if limit is not None and filters.empty:
            pairs = pairs[:limit]  # nothing to filter out: read no more rows than will be kept
        return self._hydrate(pairs, filters, limit)[:limit]

    def _hydrate(self, pairs: list[tuple[int, float]], filters: Filters, limit: int | None = None
                 ) -> list[SearchHit]:
        """Hits for the (id, score) pairs, best first as given, that pass the filters: the first `limit` of them.
        With a limit, the ids that pass are found first, checked best first a chunk at a time until `limit`
        pass, and only those hits read (a deep widening fetches thousands of candidates to keep a few)."""
        if not pairs:
            return []
        score = dict(pairs)
        ids = list(score)
        clauses = _filter_clauses(filters)
        stmt = select(ImageRecord).where(*clauses)
        with self.library.session() as s:
            if limit is not None and not filters.empty:
                ids = _first_passing(s, select(ImageRecord.id).where(*clauses), ids, limit)
                stmt = select(ImageRecord)  # these ids passed the filters just now, in this transaction
            rows = [r for chunk in in_chunks(ids) for r in s.scalars(stmt.where(ImageRecord.id.in_(chunk)))]
            found = [r.id for r in rows]
            captions, ocr = image_texts(s, found)
        hits = [
            SearchHit(
                id=r.id,
                path=r.path,
                score=score[r.id],
                width=r.display_width,
                height=r.display_height,
                taken_at=r.taken_at,
                camera=r.camera,
                thumbnail=str(self.library.root / r.thumbnail) if r.thumbnail else None,
                caption=captions.get(r.id),
                ocr_text=ocr.get(r.id) or None,
            )
            for r in rows
        ]
        order = {image_id: rank for rank, image_id in enumerate(score)}
        hits.sort(key=lambda h: order[h.id])  # as ranked by the caller (keyword: all-words matches first)
        return hits


def image_texts(session, image_ids: list[int]) -> tuple[dict[int, str], dict[int, str]]:
    """(image id -> caption, image id -> OCR text). Of several captions, a real caption model's wins over the
    offline fallback's, then the newest."""
    best: dict[int, tuple[bool, datetime, str]] = {}
    ocr: dict[int, str] = {}
    for chunk in in_chunks(image_ids):
        rows = session.execute(
            select(Caption.image_id, Caption.model, Caption.created_at, Caption.text).where(Caption.image_id.in_(chunk))
        )
        for image_id, model, created, text in rows:
            rank = (model != "offline", created, text)
            if image_id not in best or rank[:2] > best[image_id][:2]:
                best[image_id] = rank
        ocr.update(session.execute(select(OcrText.image_id, OcrText.text).where(OcrText.image_id.in_(chunk))).all())
    return {image_id: rank[2] for image_id, rank in best.items()}, ocr


def probe_factor(share: float) -> int:
    """How many times an IVF index's usual lists to probe first for a condition admitting `share` of the products."""
    return 1 if share >= 0.25 else 2 if share >= 0.05 else 4


def _first_passing(session, passing: Select, ids: list[int], limit: int) -> list[int]:
    """The first `limit` of `ids` that `passing` (a select of image ids) returns, checked in order in chunks that
    double from 4 x limit: a condition admitting 3% needs ~700 of a 2,700-deep fetch checked (~8 us each)."""
    kept: list[int] = []
    start, size = 0, 4 * limit
    while start < len(ids) and len(kept) < limit:
        chunk = ids[start : start + min(size, IN_CHUNK)]
        found = set(session.scalars(passing.where(ImageRecord.id.in_(chunk))))
        kept += [i for i in chunk if i in found]
        start, size = start + len(chunk), 2 * size
    return kept[:limit]


def _filter_clauses(filters: Filters) -> list:
    """SQL conditions for an ok image that passes `filters`."""
    clauses = [ImageRecord.status == "ok"]
    if filters.path_prefix:
        try:
            prefix = str(Path(filters.path_prefix).expanduser().resolve())
        except RuntimeError:  # "~someone/…" for a user this machine does not have
            raise ValueError(f"the path filter {filters.path_prefix!r} names the home folder of an unknown user; "
                             "give an absolute path") from None
        clauses.append(under_any(ImageRecord.path, [prefix]))
    if filters.after:
        clauses.append(ImageRecord.taken_at >= filters.after)
    if filters.before:
        clauses.append(ImageRecord.taken_at < filters.before)
    if filters.camera:
        # A plain substring (instr, not LIKE): "_" and "%" in a camera name are characters, not wildcards.
        camera = func.coalesce(ImageRecord.camera_make, "") + " " + func.coalesce(ImageRecord.camera_model, "")
        clauses.append(func.instr(func.lower(camera), filters.camera.lower()) > 0)
    if filters.where:
        clauses.append(admitted_images(filters.where))
    clauses += [tagged(tag.strip()) for tag in filters.tags]
    return clauses
