"""Questions over a collection when no model can check each image (no VQA or image-text matching model).

Questions about text ("which photos have text?", "which photos say EXIT?") are answered from the OCR text the
library stored at indexing: grounded, so verified. Any other question is answered by search alone: the images
most like the question's query by similarity, fused with those whose words (file name, captions, OCR text, tags)
match it; these are marked unverified, since nothing looked at them with the question in mind."""

from __future__ import annotations

import re
from dataclasses import replace

from sqlalchemy import exists, func, select

from vlsearch.captioner.ocr import holds_words, quote_text
from vlsearch.library.schema import OcrText
from vlsearch.search.ask import AskResult, Finding
from vlsearch.search.engine import SearchEngine
from vlsearch.search.keywords import KeywordQuery, reciprocal_rank_fusion
from vlsearch.search.query import Filters, SearchHit, SearchQuery

# Similar enough: within 90% of the best match's similarity (relative: each model's cosines have their own scale).
# `python -m bench ask` (bench/results/ask.md), the sample photos with the offline preset: 2.24 images a question
# at precision 0.429 / recall 0.800; the best absolute cut, 0.3, kept 5.08 at 0.165 / 0.700.
RELATIVE = 0.9
_TEXT = r"(?:any\s+|some\s+|visible\s+)?(?:text|writing|words|letters|numbers|lettering|captions?)"
# The retrieval query of a question about whether there is text: "which photos have text?" -> "text".
_HAS_TEXT = re.compile(rf"^{_TEXT}(?:\s+(?:on|in)\s+(?:it|them|the\s+\w+))?$", re.I)
# ... and of one about what it says: "which photos say EXIT?" -> "say EXIT"; "with the word 'sale'" -> "the word
# 'sale'" (quoted: "text on a sign" describes text, it does not quote it).
_QUOTE = r"[\"“'‘](?P<quoted>[^\"”'’]+)[\"”'’]"
_SAYS = (re.compile(rf"^(?:that\s+)?(?:says?|reads?|spells?)\s+(?:{_QUOTE}|(?P<words>\S.*))$", re.I),
         re.compile(rf"^(?:the\s+)?(?:words?|text)\s+{_QUOTE}(?:\s+(?:on|in)\s+(?:it|them))?$", re.I))
SIMILAR, WORDS = "found by similarity", "found by its words"
QUOTE = 120  # characters of OCR text an answer quotes


def ask_unchecked(engine: SearchEngine, question: str, query: str, *, k: int, candidates: int,
                  filters: Filters) -> AskResult:
    """The answer without a checking model: from OCR for questions about text, else by search (unverified)."""
    if _has_ocr(engine):
        if _HAS_TEXT.match(query):
            return _from_ocr(engine, question, query, None, k, filters)
        for says in filter(None, (pattern.match(query) for pattern in _SAYS)):
            words = says["quoted"] or says.groupdict().get("words")
            return _from_ocr(engine, question, query, words.strip(), k, filters)
    return _by_search(engine, question, query, k, candidates, filters)


def _has_ocr(engine: SearchEngine) -> bool:
    with engine.library.session() as s:
        return bool(s.scalar(select(exists().where(OcrText.image_id.is_not(None)))))


def _from_ocr(engine: SearchEngine, question: str, query: str, words: str | None, k: int,
              filters: Filters) -> AskResult:
    """Images whose stored OCR text is not empty (`words` None), or holds `words` as whole words; most text first."""
    if words is None:
        with engine.library.session() as s:  # ids and lengths only: the hits are read for the k that pass
            read = s.execute(select(OcrText.image_id, func.length(OcrText.text)).where(OcrText.text != "")
                             .order_by(func.length(OcrText.text).desc())).all()
        hits, considered = engine.hits([(i, float(n)) for i, n in read], filters, limit=k), len(read)
        check = "is there text?"
    else:
        hits = engine.search(SearchQuery(text=f'"{words}"', mode="keyword", k=10_000,
                                         filters=replace(filters, min_score=None)))
        hits = [h for h in hits if holds_words(h.ocr_text or "", words)]
        considered, check = len(hits), f'does it say "{words}"?'
    findings = [Finding(replace(h, score=1.0), f'yes: "{quote_text(h.ocr_text or "", QUOTE)}"', 1.0)
                for h in hits[:k]]
    return AskResult(question, query, check, "ocr", "ocr", considered, findings)


def _by_search(engine: SearchEngine, question: str, query: str, k: int, candidates: int,
               filters: Filters) -> AskResult:
    """The images most like `query` (within RELATIVE of the best) fused with those whose words match it."""
    similar = engine.search(SearchQuery(text=query, k=candidates, filters=filters))
    floor = RELATIVE * similar[0].score if similar and similar[0].score > 0 else float("inf")
    close = [h for h in similar if h.score >= floor]
    worded: list[SearchHit] = []
    if not KeywordQuery.parse(query).empty:
        worded = engine.search(SearchQuery(text=query, mode="keyword", k=candidates,
                                           filters=replace(filters, min_score=None)))
    fused = reciprocal_rank_fusion([h.id for h in close], [h.id for h in worded])[:k]
    by_id = {h.id: h for h in worded} | {h.id: h for h in close}
    close_ids, worded_ids = {h.id for h in close}, {h.id for h in worded}
    findings = [Finding(replace(by_id[i], score=score), _how(i in close_ids, i in worded_ids), score)
                for i, score in fused]
    considered = len({h.id for h in similar} | worded_ids)
    return AskResult(question, query, query, "retrieval", engine.encoder.name, considered, findings, verified=False)


def _how(similar: bool, worded: bool) -> str:
    return f"{SIMILAR} and {WORDS.removeprefix('found by ')}" if similar and worded else SIMILAR if similar else WORDS
