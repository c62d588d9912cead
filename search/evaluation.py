"""How well search finds what it should: labelled cases read from a JSON Lines file, searched in each mode and
scored by recall@1/5/10, reciprocal rank and nDCG@10; and the pair scores a tags or duplicates run is judged by.

An eval file holds one case a line (blank lines are skipped):

    {"text": "a cat", "relevant": ["chelsea.jpg"]}                   words, and the photos they should find
    {"image": "queries/cat-crop.jpg", "relevant": ["chelsea.jpg"]}   an example image (it need not be indexed)
    {"path": "chelsea.jpg", "tags": ["cat", "animal"]}               the tags a photo should get
    {"duplicates": [["a.jpg", "a-copy.jpg"], ["b.jpg", "b-2.jpg"]]}  groups of files that are one picture

Relative paths are relative to a photos folder (by default the eval file's own) and are resolved, as the library
stores its paths, so they compare with the paths search returns."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from itertools import combinations

from sqlalchemy import select

from vlsearch.images import decode_file
from vlsearch.library import ImageRecord, Library
from vlsearch.library.sql import in_chunks
from vlsearch.search.engine import SearchEngine
from vlsearch.search.eval_cases import SearchCase
from vlsearch.search.query import MODES, SearchQuery

CUTOFFS = (1, 5, 10)  # the k of the recall@k reported
NDCG_DEPTH = 10


# Metrics over one ranked list of paths and the set of relevant ones


def recall_at(ranked: Sequence[str], relevant: Set[str], k: int) -> float:
    """The share of the relevant paths found among the first k results (1.0: all of them). With more relevant
    paths than k it cannot reach 1: of two relevant photos, recall@1 is at most 0.5."""
    _require_relevant(relevant)
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def reciprocal_rank(ranked: Sequence[str], relevant: Set[str], depth: int | None = None) -> float:
    """1 / the rank (from 1) of the first relevant result among the first `depth` (all when None); 0 if none."""
    for rank, path in enumerate(ranked[:depth], 1):
        if path in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranked: Sequence[str], relevant: Set[str], k: int = NDCG_DEPTH) -> float:
    """nDCG@k with binary relevance: DCG = sum over ranks i (from 1) of rel_i / log2(i + 1), divided by the DCG of
    the ideal list (min(len(relevant), k) relevant results first). 1.0 when the relevant paths lead the list."""
    _require_relevant(relevant)
    found: set[str] = set()  # a path listed twice gains once: nDCG stays at most 1
    dcg = 0.0
    for rank, path in enumerate(ranked[:k], 1):
        if path in relevant and path not in found:
            found.add(path)
            dcg += 1 / math.log2(rank + 1)
    return dcg / sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))


def _require_relevant(relevant: Set[str]) -> None:
    if not relevant:
        raise ValueError("a ranking is scored against at least one relevant path")


@dataclass(frozen=True)
class PairScores:
    """Precision and recall over pairs ((path, tag) pairs, or pairs of paths put in one group), with the counts
    behind them. Each is 0 when its denominator is (nothing predicted, nothing expected), as scikit-learn's is."""

    predicted: int
    expected: int
    correct: int

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.expected if self.expected else 0.0

    def as_dict(self) -> dict:
        return {"precision": round(self.precision, 6), "recall": round(self.recall, 6), "predicted": self.predicted,
                "expected": self.expected, "correct": self.correct}


def tag_scores(predicted: dict[str, set[str]], truth: dict[str, set[str]]) -> PairScores:
    """Scores micro-averaged over (path, tag) pairs of the paths the truth labels: a tag predicted for a path it
    does not label is not judged (the truth says nothing about that photo)."""
    guessed = {(path, tag) for path in truth for tag in predicted.get(path, ())}
    expected = {(path, tag) for path, tags in truth.items() for tag in tags}
    return PairScores(len(guessed), len(expected), len(guessed & expected))


def duplicate_pair_scores(predicted_groups: list[set[str]], truth_groups: list[set[str]]) -> PairScores:
    """Scores over pairs of paths put in one group. The truth is taken as complete (a photo in no group has no
    duplicate), so a predicted pair it lacks is a wrong one."""
    predicted, expected = _pairs(predicted_groups), _pairs(truth_groups)
    return PairScores(len(predicted), len(expected), len(predicted & expected))


def _pairs(groups: Iterable[Set[str]]) -> set[tuple[str, str]]:
    return {pair for group in groups for pair in combinations(sorted(group), 2)}


# The eval file


# Running the search cases


@dataclass(frozen=True)
class Scores:
    """Recall@1/5/10, reciprocal rank and nDCG@10 of one ranking, or their means over cases."""

    recall_1: float
    recall_5: float
    recall_10: float
    reciprocal_rank: float
    ndcg_10: float

    @classmethod
    def of(cls, ranked: Sequence[str], relevant: Set[str], depth: int) -> Scores:
        """The scores of `ranked`; the reciprocal rank counts the first `depth` results."""
        recalls = (recall_at(ranked, relevant, k) for k in CUTOFFS)
        return cls(*recalls, reciprocal_rank(ranked, relevant, depth), ndcg_at(ranked, relevant))

    @classmethod
    def mean(cls, scores: Sequence[Scores]) -> Scores | None:
        """The mean of each score (MRR for the reciprocal rank); None for no scores."""
        if not scores:
            return None
        return cls(*(sum(column) / len(scores) for column in zip(*(s.as_tuple() for s in scores), strict=True)))

    def as_tuple(self) -> tuple[float, ...]:
        return self.recall_1, self.recall_5, self.recall_10, self.reciprocal_rank, self.ndcg_10

    def as_dict(self) -> dict:
        names = ("recall@1", "recall@5", "recall@10", "reciprocal_rank", "ndcg@10")
        return {name: round(value, 6) for name, value in zip(names, self.as_tuple(), strict=True)}


@dataclass(frozen=True)
class CaseResult:
    line: int
    query: str  # the text, or the query image's path
    scores: Scores


@dataclass(frozen=True)
class ModeReport:
    """One mode's scores: each scored case's and their means; `skipped` cases do not apply to the mode."""

    mode: str
    skipped: int
    cases: tuple[CaseResult, ...]

    @property
    def mean(self) -> Scores | None:
        return Scores.mean([case.scores for case in self.cases])

    def as_dict(self) -> dict:
        mean = self.mean
        return {"mode": self.mode, "scored": len(self.cases), "skipped": self.skipped,
                "mean": mean.as_dict() if mean else None,
                "cases": [{"line": c.line, "query": c.query, **c.scores.as_dict()} for c in self.cases]}


@dataclass(frozen=True)
class SearchReport:
    """The scores of every mode run, how deep reciprocal rank looked (k), the rerank depth (0: none), and the
    relevant paths the library holds no image at (they count as misses)."""

    modes: tuple[ModeReport, ...]
    k: int
    rerank: int
    unindexed: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"k": self.k, "rerank": self.rerank, "unindexed": list(self.unindexed),
                "modes": [mode.as_dict() for mode in self.modes]}


def evaluate_search(engine: SearchEngine, cases: Sequence[SearchCase], modes: Sequence[str] = MODES, k: int = 10,
                    rerank: int = 0) -> SearchReport:
    """Every case searched in each mode (rerank: rescoring that many top hits, which needs the engine's matcher)
    and scored; reciprocal rank counts the first k hits, and max(k, 10) are fetched so recall@10 and nDCG@10 are
    always measured. Keyword mode and a rerank match words, so they score text cases only and skip the others.
    Raises ValueError for an unknown mode, DecodeError for a query image that cannot be read."""
    modes = list(dict.fromkeys(modes))
    if not modes or any(mode not in MODES for mode in modes):
        raise ValueError(f"modes must be some of {', '.join(MODES)}, not {modes!r}")
    if k < 1:
        raise ValueError("k must be at least 1")
    results: dict[str, list[CaseResult]] = {mode: [] for mode in modes}
    for case in cases:
        applies = [mode for mode in modes if case.text is not None or not (mode == "keyword" or rerank)]
        image = decode_file(case.image) if case.image is not None and applies else None
        for mode in applies:
            query = SearchQuery(text=case.text, image=image, k=max(k, *CUTOFFS), mode=mode, rerank=rerank)
            ranked = [hit.path for hit in engine.search(query)]
            results[mode].append(CaseResult(case.line, case.label, Scores.of(ranked, case.relevant, k)))
    reports = tuple(ModeReport(mode, len(cases) - len(results[mode]), tuple(results[mode])) for mode in modes)
    return SearchReport(reports, k, rerank, unindexed(engine.library, [p for c in cases for p in c.relevant]))


def unindexed(library: Library, paths: Iterable[str]) -> tuple[str, ...]:
    """Those of `paths` at which the library holds no readable image: a typo in the eval file, or photos never
    indexed. Every search misses them, so they are worth a word before anyone trusts the scores."""
    wanted = sorted(set(paths))
    held: set[str] = set()
    with library.session() as s:
        for chunk in in_chunks(wanted):
            ok = (ImageRecord.path.in_(chunk), ImageRecord.status == "ok")
            held.update(s.scalars(select(ImageRecord.path).where(*ok)))
    return tuple(path for path in wanted if path not in held)
