"""Keyword search over file names, captions and OCR text (SQLite FTS5), and rank fusion with vector search.

User text never reaches FTS5's query syntax: it is split into "quoted phrases" and words, and every piece is
passed as a quoted FTS5 string, so `NOT`, `*`, `:` or a stray quote are just characters to look for."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from vlsearch.library.schema import TEXT_TABLE

SQLITE_MAX_INT = 2**63 - 1  # a larger LIMIT (from a huge k) cannot even be bound as a parameter
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al., 2009): 1 / (60 + rank)
_PHRASE = re.compile(r'"([^"]*)"')
_WORD = re.compile(r"\w+", re.UNICODE)
# bm25 column weights: name, caption, ocr, product (title, brand, category, description), tags
_WEIGHTS = (2.0, 1.0, 1.0, 2.0, 1.0)
# Words too common to make an image match on their own: they count when every word must match, never when any may.
STOPWORDS = frozenset("""
a an the and or but nor of on in at to from by for with without about into onto over under near off up down
is are was were be been being am do does did has have had it its this that these those there here some any
all no not my your our their his her me you we they i he she him them photo photos picture pictures image images
show shows showing find which what where who whose as than then so very can could would should will
""".split())  # noqa: SIM905 (a word list reads better as text)


@dataclass(frozen=True)
class KeywordQuery:
    """Exact phrases (must all match) and loose words (as many as possible should match)."""

    phrases: tuple[str, ...]
    words: tuple[str, ...]

    @classmethod
    def parse(cls, query: str) -> KeywordQuery:
        phrases = tuple(" ".join(_WORD.findall(p)) for p in _PHRASE.findall(query))
        rest = _PHRASE.sub(" ", query).replace('"', " ")
        return cls(tuple(p for p in phrases if p), tuple(dict.fromkeys(w.lower() for w in _WORD.findall(rest))))

    @property
    def empty(self) -> bool:
        return not (self.phrases or self.words)

    def expressions(self) -> list[str]:
        """FTS5 MATCH expressions, strictest first: every word, then any word that is not a stopword (phrases
        required in both)."""
        phrases = [_quote(p) for p in self.phrases]
        words = [_quote(w) for w in self.words]
        strict = " AND ".join(phrases + words)
        content = [_quote(w) for w in self.words if w not in STOPWORDS]
        if not content or len(content) == len(words) == 1:
            return [strict]
        loose = " AND ".join([*phrases, "(" + " OR ".join(content) + ")"])
        return [strict, loose]


def _quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def keyword_ranking(session: Session, query: KeywordQuery, limit: int) -> list[tuple[int, float]]:
    """(image id, bm25 relevance, higher is better) of the best `limit` matches, all-words matches first."""
    if query.empty:
        return []
    ranked: dict[int, float] = {}
    weights = ", ".join(str(w) for w in _WEIGHTS)
    for expression in query.expressions():
        rows = session.execute(
            text(f"SELECT rowid, -bm25({TEXT_TABLE}, {weights}) FROM {TEXT_TABLE} "
                 f"WHERE {TEXT_TABLE} MATCH :q ORDER BY bm25({TEXT_TABLE}, {weights}) LIMIT :n"),
            {"q": expression, "n": min(limit, SQLITE_MAX_INT)},
        )
        for image_id, relevance in rows:
            ranked.setdefault(int(image_id), float(relevance))
        if len(ranked) >= limit:
            break
    return list(ranked.items())[:limit]


def reciprocal_rank_fusion(*rankings: list[int]) -> list[tuple[int, float]]:
    """Fuse best-first id lists: each list gives 1 / (RRF_K + rank); ids found by several lists rise."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, image_id in enumerate(ranking, 1):
            scores[image_id] = scores.get(image_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
