"""The quality report: an eval set's search cases scored per mode, and the library's tags and duplicate groups
scored against its tag and duplicate cases; what `vlsearch eval` prints and `POST /api/v1/eval` answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vlsearch.library import Library
from vlsearch.search.duplicates import DuplicateGroup, find_duplicates
from vlsearch.search.engine import SearchEngine
from vlsearch.search.eval_cases import EvalSet
from vlsearch.search.evaluation import PairScores, SearchReport, duplicate_pair_scores, evaluate_search, tag_scores
from vlsearch.search.query import MODES
from vlsearch.search.tags import tags_by_path

GroupsOf = Callable[[Library, str], list[DuplicateGroup]]  # the library's duplicate groups at default thresholds


@dataclass(frozen=True)
class QualityReport:
    search: SearchReport | None = None
    tags: PairScores | None = None
    duplicates: PairScores | None = None

    def as_dict(self) -> dict:
        out = self.search.as_dict() if self.search else {}
        if self.tags:
            out["tags"] = self.tags.as_dict()
        if self.duplicates:
            out["duplicates"] = self.duplicates.as_dict()
        return out


def quality_report(library: Library, model: str, cases: EvalSet, engine: Callable[[], SearchEngine],
                   modes: Sequence[str] = MODES, k: int = 10, rerank: int = 0,
                   groups_of: GroupsOf = find_duplicates) -> QualityReport:
    """Every kind of case the set holds, scored; `engine` is asked for only when there are search cases. Raises
    ValueError for an unknown mode, DecodeError for a query image that cannot be read."""
    return QualityReport(
        evaluate_search(engine(), cases.search, modes, k=k, rerank=rerank) if cases.search else None,
        tag_report(library, cases.tag_truth()) if cases.tags else None,
        duplicate_report(library, model, cases.duplicate_truth(), groups_of) if cases.duplicates else None)


def tag_report(library: Library, truth: dict[str, set[str]]) -> PairScores:
    """The library's tags of the labelled photos against the labels, compared without case."""
    given = tags_by_path(library, list(truth))
    lower = {path: {t.lower() for t in tags} for path, tags in truth.items()}
    return tag_scores({path: {t.lower() for t in given.get(path, ())} for path in truth}, lower)


def duplicate_report(library: Library, model: str, truth: list[set[str]],
                     groups_of: GroupsOf = find_duplicates) -> PairScores:
    """The library's duplicate groups (default thresholds), among the labelled photos, against the labels."""
    labelled = set().union(*truth)
    found = [{m.path for m in g.members} & labelled for g in groups_of(library, model)]
    return duplicate_pair_scores([g for g in found if len(g) > 1], truth)
