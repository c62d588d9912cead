"""Questions over a whole collection: retrieve candidates with CLIP, check each with VQA (or ITM), keep the yeses.

"which photos show a dog on a beach?" becomes the retrieval query "a dog on a beach" and, for each candidate,
the yes/no question "does the picture show a dog on a beach?". BLIP VQA's probability of "yes" is the score;
without a VQA model, BLIP ITM's probability that the query describes the image is. Without either, the question
is still answered: from the OCR text the library stored, or by retrieval alone, marked unverified
(search/ask_unchecked.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from vlsearch.captioner import ImageTextModel, NotSupported
from vlsearch.images import DecodeError
from vlsearch.search.engine import SearchEngine
from vlsearch.search.query import Filters, SearchHit, SearchQuery

DEFAULT_CANDIDATES = 30
THRESHOLD = 0.5

_NOUN = r"(?:photos?|pictures?|pics?|images?|shots?|ones?)"
_LEAD = re.compile(
    rf"^\s*(?:"
    rf"(?:which|what)\s+(?:of\s+(?:the|my|our)\s+)?{_NOUN}\b(?:\s+(?:show|shows|have|has|contain|contains|include|"
    rf"includes|depict|depicts|feature|features|are\s+of|is\s+of|are|with)\b)?"
    rf"|(?:find|show|give|get|list)\s+(?:me\s+)?(?:all\s+)?(?:the\s+|my\s+)?{_NOUN}\s*(?:of|with|showing|that\s+show)?"
    rf"|(?:find|show|give|get|list)\s+(?:me\s+)?(?:all\s+)?(?:the\s+|my\s+)?"
    rf"|(?:are|is)\s+there\s+(?:any\s+|a\s+|an\s+)?{_NOUN}\s*(?:of|with|showing|that\s+shows?)?"
    rf"|(?:are|is)\s+there\s+(?:any\s+)?"
    rf"|(?:do|does)\s+(?:i|we|it)\s+have\s+(?:any\s+|a\s+)?{_NOUN}\s*(?:of|with|showing)?"
    rf"|(?:all\s+|any\s+|my\s+)?{_NOUN}\s+(?:of|with|showing|that\s+show)"
    rf"|where\s+(?:is|are)"
    rf")\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Finding:
    """A candidate the check said yes to: the hit, the answer in words, and the check's probability."""

    hit: SearchHit
    answer: str
    score: float

    def as_dict(self) -> dict:
        return {**self.hit.as_dict(), "answer": self.answer, "answer_score": round(self.score, 6)}


@dataclass(frozen=True)
class AskResult:
    question: str
    retrieval_query: str  # what CLIP searched for
    check: str  # the yes/no question asked (VQA, OCR), or the text matched (ITM) or searched for (retrieval)
    method: str  # "vqa", "itm", "ocr" (the library's OCR text) or "retrieval" (search alone)
    model: str
    candidates: int
    findings: list[Finding]
    verified: bool = True  # False: found by search, not checked image by image


def retrieval_query(question: str) -> str:
    """The thing a "which photos show X?" question is about: X, as words to search for."""
    stripped = _LEAD.sub("", question, count=1).strip().rstrip("?.!").strip()
    if not re.search(r"\w", stripped):
        raise ValueError(f"{question!r} asks for photos but not what they should show: ask e.g. \"which photos show "
                         "a dog on a beach?\"")
    return stripped


def check_question(query: str) -> str:
    return f"does the picture show {query}?"


def ask_collection(
    engine: SearchEngine,
    model: ImageTextModel | None,
    question: str,
    *,
    k: int = 10,
    candidates: int = DEFAULT_CANDIDATES,
    threshold: float = THRESHOLD,
    filters: Filters | None = None,
) -> AskResult:
    """Images of the library for which the answer to `question` is yes, best first (at most k)."""
    if not re.search(r"\w", question):
        raise ValueError(f"{question!r} has no words to search for: ask a question, e.g. "
                         "\"which photos show a dog on a beach?\"")
    if candidates < 1 or k < 1:
        raise ValueError("k and the number of candidates must each be at least 1")
    query = retrieval_query(question)
    check = _checker(model)
    if check is None:
        from vlsearch.search.ask_unchecked import ask_unchecked

        return ask_unchecked(engine, question, query, k=k, candidates=candidates, filters=filters or Filters())
    method, score_of = check
    hits = engine.search(SearchQuery(text=query, k=candidates, filters=filters or Filters()))
    images, kept = [], []
    roots = engine.indexed_roots()
    for hit in hits:
        try:
            images.append(engine.decode_indexed(hit.path, roots))
            kept.append(hit)
        except DecodeError:
            continue  # changed, gone or linked out of the indexed folders since indexing
    asked = check_question(query) if method == "vqa" else query
    scores = score_of(images, [asked] * len(images))
    findings = [
        Finding(replace(hit, match_score=float(score)), "yes" if method == "vqa" else "matches", float(score))
        for hit, score in zip(kept, scores, strict=True)
        if score >= threshold
    ]
    findings.sort(key=lambda f: -f.score)
    return AskResult(question, query, asked, method, model.name, len(kept), findings[:k])


def _checker(model: ImageTextModel | None) -> tuple[str, Callable] | None:
    """How `model` checks a candidate: VQA's P(yes), else ITM's P(match); None when it can do neither (asked
    with no images, which costs nothing)."""
    for method, score_of in (("vqa", getattr(model, "yes_probability", None)), ("itm", getattr(model, "match", None))):
        if score_of is None:
            continue
        try:
            score_of([], [])
        except NotSupported:
            continue
        return method, score_of
    return None
