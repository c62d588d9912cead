"""The recall guard: an approximate index (ivf, ivfpq, hnsw) is searched, when it is built, with a sample of the
stored vectors and with text-like probes made from them, compared with exact search, and its nprobe / efSearch /
rescoring depth raised (bounded) until recall@10 reaches a target; then its latency is measured, and, over a
latency target, traded back. What it settled on and what it measured are kept in the index metadata."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import faiss
import numpy as np

from vlsearch.library.vectors.sources import VectorChunks, VectorLookup, array_lookup

if TYPE_CHECKING:
    from vlsearch.library.vectors.index import VectorIndex

log = logging.getLogger(__name__)

RECALL_TARGET = 0.95
RECALL_K = 10
GUARD_QUERIES = 200  # stored vectors sampled as queries; as many text-like probes are made from them
TEXT_LIKE_COSINE = 0.3  # a CLIP text query's cosine with its best image is ~0.3
NPROBE_MAX = 1024
EF_SEARCH_MAX = 1024
RESCORE_FACTOR_MAX = 40
LATENCY_QUERIES = 100  # single queries timed after the guard, for the p50 latency it records


class TopK:
    """The exact top k of some queries, merged chunk by chunk."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k = queries, k
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), k), -1, dtype=np.int64)

    def update(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if not len(ids):
            return
        scores, rows = faiss.knn(self.queries, vectors, min(self.k, len(ids)), faiss.METRIC_INNER_PRODUCT)
        scores = np.hstack([self.scores, scores])
        found = np.hstack([self.ids, np.where(rows >= 0, ids[np.clip(rows, 0, None)], -1)])
        best = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(scores, best, axis=1)
        self.ids = np.take_along_axis(found, best, axis=1)


def exact_search(queries: np.ndarray, chunks: VectorChunks, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, ids) of `queries` over every chunk, one chunk in memory at a time."""
    top = TopK(np.ascontiguousarray(queries, dtype=np.float32), k)
    for ids, vectors in chunks():
        top.update(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return top.scores, top.ids


def text_like_probes(sources: np.ndarray, rng: np.random.Generator, cosine: float = TEXT_LIKE_COSINE) -> np.ndarray:
    """Stand-ins for text queries, made from image vectors (a library holds no text vectors): each keeps cosine
    `cosine` with its source and points the rest of the way in a random direction orthogonal to it.

    Why: a CLIP text query lies outside the cone of image vectors (the modality gap), so its best match has
    cosine ~0.3 and its top 10 lie within a few hundredths of each other. Such a query is far from every IVF
    centroid and HNSW node, and an index tuned on image queries alone misses its neighbours. On the synthetic
    data of bench/query.py these probes predict the recall of its text queries to within ~0.02 for IVF and HNSW
    alike (cosine 0.35 was optimistic for HNSW); a real model's gap direction can move it either way."""
    noise = rng.standard_normal(sources.shape).astype(np.float32)
    noise -= np.sum(noise * sources, axis=1, keepdims=True) * sources
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    probes = cosine * sources + math.sqrt(1 - cosine**2) * noise
    return (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)


def probe_queries(stored: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The guard's queries: the sampled stored vectors, then a text-like probe made from each."""
    return np.vstack([stored, text_like_probes(stored, rng)])


class GuardProbes:
    """The recall guard's queries (`stored` stored vectors, then as many text-like probes) with the k-th best exact
    score of each, and where to read exact vectors of IVF-PQ candidates."""

    def __init__(self, queries: np.ndarray, stored: int, truth_scores: np.ndarray, exact: VectorLookup | None,
                 count: int) -> None:
        self.queries, self.stored, self.exact, self.count = queries, stored, exact, count
        self.k = truth_scores.shape[1]
        self.threshold = truth_scores[:, self.k - 1] - 1e-5  # by score, so that tied duplicates count as found

    def measure(self, index: VectorIndex) -> tuple[dict[str, float], float]:
        """(mean recall@k of each kind of query, the lowest mean-less-one-standard-error among them). IVF-PQ's
        candidates are rescored exactly, as its searches do; the other kinds' scores are exact already."""
        hit = np.empty(len(self.queries))
        for lo in range(0, len(self.queries), 50):  # a few queries at a time: IVF-PQ reads their candidates
            part = self.queries[lo : lo + 50]
            if index.kind == "ivfpq":
                _, found = index.candidates(part, self.k)
                scores = self._rescored(part, found)
            else:
                scores, found = index.candidates(part, self.k)
                scores = np.where(found >= 0, scores, -np.inf)
            top = -np.sort(-scores, axis=1)[:, : self.k]  # exact rescoring keeps the k best candidates
            hit[lo : lo + 50] = (top >= self.threshold[lo : lo + 50, None]).mean(axis=1)
        parts = {"stored": hit[: self.stored], "text_like": hit[self.stored :]}
        low = min(h.mean() - h.std() / math.sqrt(len(h)) for h in parts.values())
        return {name: float(h.mean()) for name, h in parts.items()}, float(low)

    def _rescored(self, part: np.ndarray, found: np.ndarray) -> np.ndarray:
        """The exact scores of candidates `found` for queries `part`; -inf where a candidate has no exact vector."""
        have, vectors = self.exact(np.unique(found[found >= 0])) if self.exact else (found[:0, 0], None)
        order = np.argsort(have)
        have = np.asarray(have, dtype=np.int64)[order]
        at = np.clip(np.searchsorted(have, found), 0, max(len(have) - 1, 0))
        known = (found >= 0) & (have[at] == found) if len(have) else np.zeros(found.shape, dtype=bool)
        scores = np.full(found.shape, -np.inf, dtype=np.float32)
        if len(have):
            rows = np.asarray(vectors, dtype=np.float32)[order][at]
            scores = np.where(known, np.einsum("qcd,qd->qc", rows, part), -np.inf)
        return scores

    def p50_ms(self, index: VectorIndex) -> float:
        """Median ms of one query (stored and text-like in turn) through VectorIndex.search, fastest of 2 passes."""
        picks = np.ravel(np.column_stack([np.arange(self.stored), np.arange(self.stored, 2 * self.stored)]))
        picks = picks[:LATENCY_QUERIES]  # stored and text-like in turn
        index.search(self.queries[picks[0] : picks[0] + 1], RECALL_K)  # warm-up
        times = np.empty((2, len(picks)))
        for r in range(2):
            for i, q in enumerate(picks):
                started = time.perf_counter()
                index.search(self.queries[q : q + 1], RECALL_K)
                times[r, i] = time.perf_counter() - started
        return float(np.median(times.min(axis=0)) * 1e3)


def check_recall_of(index: VectorIndex, ids: np.ndarray, vectors: np.ndarray, target: float = RECALL_TARGET) -> None:
    """Run the recall guard on an index that was built without it: `ids` and `vectors` are what it holds."""
    if index.kind == "flat" or not len(ids):
        return
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rng = np.random.default_rng(0)
    stored = vectors[rng.choice(len(ids), size=min(len(ids), GUARD_QUERIES), replace=False)]
    queries = probe_queries(stored, rng)
    truth = TopK(queries, min(RECALL_K, len(ids)))
    truth.update(vectors, ids)
    guard_recall(index, GuardProbes(queries, len(stored), truth.scores, array_lookup(ids, vectors), len(ids)), target)


def guard_recall(index: VectorIndex, probes: GuardProbes, target: float) -> None:
    """Raise the search settings until recall@10 against exact search reaches `target` for both kinds of
    query, or a bound is hit (then warn). The queries: GUARD_QUERIES stored vectors (what "find similar" and
    image queries look like), and as many text-like probes made from them (see text_like_probes), which are
    harder: near no image, with top scores close together. A setting passes when each kind's mean recall less
    one standard error of that mean reaches the target, so that sampling luck does not pass a setting that
    falls short on the queries users send."""
    started = time.perf_counter()
    recall, low = probes.measure(index)
    while low < target:
        tried = []
        for option in raised_settings(index):
            before = dict(index.params)
            index.tune(option)
            tried.append((*probes.measure(index), option))
            index.tune(before)
        if not tried:
            log.warning("%s index of %d vectors: recall@%d is %.3f for stored vectors and %.3f for text-like "
                        "queries at %s, the most the recall guard may set; below the %.2f target",
                        index.kind, probes.count, probes.k, recall["stored"], recall["text_like"], index.params,
                        target)
            break
        recall, low, option = max(tried, key=lambda t: t[1])  # the first knob wins a tie
        index.tune(option)
    index.recall = {**{name: round(v, 4) for name, v in recall.items()}, "target": target,
                    "queries": probes.stored, "seconds": round(time.perf_counter() - started, 2)}
    log.info("%s index of %d vectors: %s gives recall@%d %.3f (stored) / %.3f (text-like)",
             index.kind, probes.count, index.params, probes.k, recall["stored"], recall["text_like"])


def raised_settings(index: VectorIndex) -> list[dict[str, int]]:
    """The next, costlier settings to try (one per knob that is not at its bound)."""
    def step(value: int, top: int) -> int:
        return min(top, max(value + 1, math.ceil(value * 1.5)))

    options = []
    if index.kind in ("ivf", "ivfpq"):
        top = min(faiss.extract_index_ivf(index.index).nlist, NPROBE_MAX)
        if index.params["nprobe"] < top:
            options.append({"nprobe": step(index.params["nprobe"], top)})
    if index.kind == "ivfpq" and index.params["rescore_factor"] < RESCORE_FACTOR_MAX:
        options.append({"rescore_factor": step(index.params["rescore_factor"], RESCORE_FACTOR_MAX)})
    if index.kind == "hnsw" and index.params["ef_search"] < EF_SEARCH_MAX:
        options.append({"ef_search": step(index.params["ef_search"], EF_SEARCH_MAX)})
    return options


def tune_for_latency(index: VectorIndex, probes: GuardProbes, target_ms: float | None, target_recall: float) -> None:
    """Record the p50 latency of one query at the guard's settings. Over `target_ms`, lower the search knob
    (nprobe, or efSearch) to the largest setting that answers within it, as autofaiss does, and record and
    warn that the recall target and the latency target cannot both be met on this machine."""
    p50 = probes.p50_ms(index)
    knob = "nprobe" if index.kind in ("ivf", "ivfpq") else "ef_search" if index.kind == "hnsw" else None
    if target_ms is not None and knob and p50 > target_ms and index.params[knob] > 1:
        guard_setting, low, high = index.params[knob], 1, index.params[knob] - 1
        best = 1
        while low <= high:  # the largest setting whose p50 is within the target
            middle = (low + high) // 2
            index.tune({knob: middle})
            if probes.p50_ms(index) <= target_ms:
                best, low = middle, middle + 1
            else:
                high = middle - 1
        index.tune({knob: best})
        p50 = probes.p50_ms(index)
        recall, _ = probes.measure(index)
        conflict = (f"recall@{probes.k} >= {target_recall} needs {knob} {guard_setting}, which answers in more "
                    f"than {target_ms} ms; {knob} {best} answers in {p50:.2f} ms with recall "
                    f"{recall['stored']:.3f} (stored) / {recall['text_like']:.3f} (text-like)")
        log.warning("%s index of %d vectors: %s", index.kind, probes.count, conflict)
        index.recall.update({name: round(v, 4) for name, v in recall.items()})
        index.build_info["conflict"] = conflict
    index.build_info["p50_ms"] = round(p50, 3)
