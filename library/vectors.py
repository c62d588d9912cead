"""FAISS over L2-normalised vectors, inner product, ids = image ids. Derived from SQLite, saved atomically.

An approximate index (ivf, ivfpq, hnsw) is checked when it is built: the recall guard searches it with a sample of
the stored vectors and with text-like probes made from them, compares with exact search, and raises nprobe /
efSearch / the rescoring depth (bounded) until recall@10 reaches a target. What it settled on and the recall it
measured are kept in the index metadata (the .json beside the .faiss file)."""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

log = logging.getLogger(__name__)

# Measured in bench/results/index_choice.md (2-core CPU): exact search answers in ~11 ms at 100k vectors and
# ~34 ms at 300k. Above 100k, IVF-Flat with 4*sqrt(n) lists trains in 7 s (100k) to 25 s (300k); unlike HNSW it can
# remove vectors, so re-runs update it in place. nprobe 32 is where the recall guard starts: it is enough for
# image-to-image queries, and bench/results/query.md shows text queries (which sit far from every image, the
# "modality gap") often need more, which the guard finds. (8*sqrt(n) lists answer faster but train 3x longer, and
# a stale index is rebuilt while the user waits.) Auto never picks IVF-PQ: at 1M vectors IVF-Flat needs ~2 GB of
# RAM and answers in a few ms (bench/results/query.md), so PQ only pays where RAM runs out, and it rescores from
# SQLite. HNSW misses text queries unless efSearch is very large, and cannot remove vectors.
FLAT_LIMIT = 100_000
IVF_LISTS_PER_SQRT_N = 4
IVF_NPROBE = 32
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
# IVF-PQ: 8-bit codes of 4-dimensional sub-vectors (128 bytes a vector at dim 512, 16x smaller than float32). Its
# approximate scores alone find only ~70% of a text query's top 10 (the top scores lie within ~0.03 of each
# other), so it keeps `rescore_factor * k` candidates and rescores them with the exact vectors, read from SQLite.
PQ_SUBVECTOR_DIM = 4
PQ_BITS = 8
PQ_MIN_VECTORS = 39 * 2**PQ_BITS  # k-means wants ~39 points per centroid; with fewer vectors, IVF-Flat it is
RESCORE_FACTOR = 10
RESCORE_EXTRA_MAX = 1000  # a deep fetch (k in the thousands) rescores at most this many extra candidates
# The recall guard.
RECALL_TARGET = 0.95
RECALL_K = 10
GUARD_QUERIES = 200  # stored vectors sampled as queries; as many text-like probes are made from them
TEXT_LIKE_COSINE = 0.3  # a CLIP text query's cosine with its best image is ~0.3
NPROBE_MAX = 1024
EF_SEARCH_MAX = 1024
RESCORE_FACTOR_MAX = 40
INDEX_KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw")
# FAISS on a GPU: Flat and IVF-Flat have GPU versions. HNSW has none, and GPU IVF-PQ does not take our 128-byte
# codes. A GPU search returns at most GPU_MAX_K results per query; deeper fetches use the CPU copy.
GPU_KINDS = frozenset({"flat", "ivf"})
GPU_MAX_K = 2048

# image ids -> (the ids among them that have a stored vector, those vectors as float32 rows), in any order
VectorLookup = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class IndexMeta:
    """What a saved index was built from: compared with SQLite on load to detect a stale file. `params` are the
    search settings the recall guard chose, `recall` what it measured (empty for exact search and old files),
    `requested` the kind a rebuild should ask for again (a stale ivfpq index stays ivfpq)."""

    model: str
    generation: int
    count: int
    kind: str
    params: dict[str, int] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)
    requested: str = ""  # the kind asked for (auto or a kind); "" in files saved before it was recorded


def gpu_eligible(kind: str, allowed: bool = True, faiss_module: Any = faiss) -> bool:
    """Whether an index of `kind` should be searched on a GPU: allowed by the caller's setting, this FAISS build
    has GPU support and sees a GPU, and the kind runs there."""
    if not allowed or kind not in GPU_KINDS:
        return False
    if not (hasattr(faiss_module, "StandardGpuResources") and hasattr(faiss_module, "index_cpu_to_gpu")):
        return False  # faiss-cpu
    try:
        return int(faiss_module.get_num_gpus()) > 0
    except (AttributeError, RuntimeError):
        return False


_GPU_RESOURCES: dict[int, tuple[Any, threading.Lock]] = {}  # id(faiss module) -> its resources and their lock
_GPU_RESOURCES_LOCK = threading.Lock()


def _gpu_resources(faiss_module: Any) -> tuple[Any, threading.Lock]:
    """One StandardGpuResources per process (each reserves scratch memory on the GPU), with the lock every use of
    it takes: FAISS allows a resources object one user at a time, and the indexes of every VectorIndex (the
    server's current one and the one replacing it after an index job) share it."""
    with _GPU_RESOURCES_LOCK:
        if id(faiss_module) not in _GPU_RESOURCES:
            _GPU_RESOURCES[id(faiss_module)] = (faiss_module.StandardGpuResources(), threading.Lock())
        return _GPU_RESOURCES[id(faiss_module)]


class VectorIndex:
    """A FAISS index of one model's vectors, searchable by batches of query vectors."""

    def __init__(self, index: faiss.Index, kind: str, dim: int, params: dict[str, int] | None = None,
                 recall: dict[str, float] | None = None, rescore_from: VectorLookup | None = None,
                 requested: str = "auto") -> None:
        self.index = index  # the CPU index: what is updated and saved
        self.kind = kind
        self.requested = requested  # what a rebuild asks for: "auto", or the kind someone chose
        self.dim = dim
        self.params: dict[str, int] = {}
        self.recall: dict[str, float] = dict(recall or {})
        self.rescore_from = rescore_from
        self._gpu: Any = None  # a GPU copy that searches, when one is in use
        self._gpu_module: Any = None
        self.tune(params or self._default_params())

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, kind: str = "auto", *,
              rescore_from: VectorLookup | None = None, target_recall: float | None = RECALL_TARGET,
              nprobe: int | None = None, ef_search: int | None = None) -> VectorIndex:
        """Make the index that suits this many vectors (exact below FLAT_LIMIT, IVF-Flat above), then let the recall
        guard tune an approximate one (`target_recall` None skips it). `nprobe` / `ef_search` are where the guard
        starts. IVF-PQ needs `rescore_from`: where the exact vectors of its candidates are read."""
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
        requested = kind
        n = len(ids)
        if kind == "auto":
            kind = "flat" if n < FLAT_LIMIT else "ivf"
        if kind == "ivfpq" and rescore_from is None:
            raise ValueError("an IVF-PQ index rescores its candidates with the exact vectors: pass rescore_from")
        if kind in ("ivf", "ivfpq") and n == 0:
            kind = "flat"  # IVF must be trained on vectors; with none, exact search it is
        if kind == "ivfpq" and n < PQ_MIN_VECTORS:
            log.info("%d vectors are too few to train IVF-PQ codes (%d wanted); building IVF-Flat", n, PQ_MIN_VECTORS)
            kind = "ivf"
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        params: dict[str, int] = {}
        if kind == "flat":
            index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif kind in ("ivf", "ivfpq"):
            nlist = max(1, min(int(IVF_LISTS_PER_SQRT_N * math.sqrt(max(n, 1))), max(n // 39, 1)))
            quantizer = faiss.IndexFlatIP(dim)
            if kind == "ivf":
                ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, _pq_subquantizers(dim), PQ_BITS,
                                       faiss.METRIC_INNER_PRODUCT)
                params["rescore_factor"] = RESCORE_FACTOR
            ivf.train(_training_sample(vectors, nlist))
            params["nprobe"] = max(1, min(nlist, nprobe or IVF_NPROBE))
            index = ivf
        else:
            hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            params["ef_search"] = ef_search or HNSW_EF_SEARCH
            index = faiss.IndexIDMap2(hnsw)
        if n:
            index.add_with_ids(vectors, ids)
        built = cls(index, kind, dim, params, rescore_from=rescore_from, requested=requested)
        if target_recall is not None and kind != "flat" and n:
            built._guard_recall(ids, vectors, target_recall)
        return built

    # -- search settings and the recall guard -----------------------------------------------------------------

    def tune(self, params: dict[str, int]) -> None:
        """Set search settings (nprobe, ef_search, rescore_factor); the others stay as they are."""
        self.params = {**self.params, **{k: int(v) for k, v in params.items()}}
        if "nprobe" in params and self.kind in ("ivf", "ivfpq"):
            faiss.extract_index_ivf(self.index).nprobe = int(params["nprobe"])
            if self._gpu is not None:
                self._clone_to_gpu()
        if "ef_search" in params and self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = int(params["ef_search"])

    def _default_params(self) -> dict[str, int]:
        """The settings stored in the FAISS index itself (a file saved before the guard recorded them)."""
        if self.kind in ("ivf", "ivfpq"):
            params = {"nprobe": int(faiss.extract_index_ivf(self.index).nprobe)}
            return params | ({"rescore_factor": RESCORE_FACTOR} if self.kind == "ivfpq" else {})
        if self.kind == "hnsw":
            return {"ef_search": int(faiss.downcast_index(self.index.index).hnsw.efSearch)}
        return {}

    def _raised(self) -> list[dict[str, int]]:
        """The next, costlier settings to try (one per knob that is not at its bound)."""
        def step(value: int, top: int) -> int:
            return min(top, max(value + 1, math.ceil(value * 1.5)))

        options = []
        if self.kind in ("ivf", "ivfpq"):
            top = min(faiss.extract_index_ivf(self.index).nlist, NPROBE_MAX)
            if self.params["nprobe"] < top:
                options.append({"nprobe": step(self.params["nprobe"], top)})
        if self.kind == "ivfpq" and self.params["rescore_factor"] < RESCORE_FACTOR_MAX:
            options.append({"rescore_factor": step(self.params["rescore_factor"], RESCORE_FACTOR_MAX)})
        if self.kind == "hnsw" and self.params["ef_search"] < EF_SEARCH_MAX:
            options.append({"ef_search": step(self.params["ef_search"], EF_SEARCH_MAX)})
        return options

    def check_recall(self, ids: np.ndarray, vectors: np.ndarray, target: float = RECALL_TARGET) -> None:
        """Run the recall guard on an index that was built without it: `ids` and `vectors` are what it holds."""
        if self.kind != "flat" and len(ids):
            self._guard_recall(np.ascontiguousarray(ids, dtype=np.int64),
                               np.ascontiguousarray(vectors, dtype=np.float32), target)

    def _guard_recall(self, ids: np.ndarray, vectors: np.ndarray, target: float) -> None:
        """Raise the search settings until recall@10 against exact search reaches `target` for both kinds of
        query, or a bound is hit (then warn). The queries: GUARD_QUERIES stored vectors (what "find similar" and
        image queries look like), and as many text-like probes made from them (see text_like_probes), which are
        harder: near no image, with top scores close together. A setting passes when each kind's mean recall less
        one standard error of that mean reaches the target, so that sampling luck does not pass a setting that
        falls short on the queries users send."""
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        stored = vectors[rng.choice(len(ids), size=min(len(ids), GUARD_QUERIES), replace=False)]
        queries = np.vstack([stored, text_like_probes(stored, rng)])
        k = min(RECALL_K, len(ids))
        truth_scores, _ = faiss.knn(queries, vectors, k, faiss.METRIC_INNER_PRODUCT)
        threshold = truth_scores[:, k - 1] - 1e-5  # by score, so that tied duplicates count as found
        order = np.argsort(ids)
        sorted_ids = ids[order]

        def measure() -> tuple[dict[str, float], float]:
            """(mean recall of each kind of query, the lowest mean-less-one-standard-error among them)"""
            found = self._candidate_ids(queries, k)
            hit = np.empty(len(queries))
            for lo in range(0, len(queries), 50):  # exact scores of the candidates, a few queries at a time
                part = found[lo : lo + 50]
                rows = order[np.clip(np.searchsorted(sorted_ids, part), 0, len(ids) - 1)]
                scores = np.einsum("qcd,qd->qc", vectors[rows], queries[lo : lo + 50])
                scores[part < 0] = -np.inf
                top = -np.sort(-scores, axis=1)[:, :k]  # exact rescoring keeps the k best candidates
                hit[lo : lo + 50] = (top >= threshold[lo : lo + 50, None]).mean(axis=1)
            parts = {"stored": hit[: len(stored)], "text_like": hit[len(stored) :]}
            low = min(h.mean() - h.std() / math.sqrt(len(h)) for h in parts.values())
            return {name: float(h.mean()) for name, h in parts.items()}, float(low)

        recall, low = measure()
        while low < target:
            tried = []
            for option in self._raised():
                before = dict(self.params)
                self.tune(option)
                tried.append((*measure(), option))
                self.tune(before)
            if not tried:
                log.warning("%s index of %d vectors: recall@%d is %.3f for stored vectors and %.3f for text-like "
                            "queries at %s, the most the recall guard may set; below the %.2f target",
                            self.kind, len(ids), k, recall["stored"], recall["text_like"], self.params, target)
                break
            recall, low, option = max(tried, key=lambda t: t[1])  # the first knob wins a tie
            self.tune(option)
        self.recall = {**{name: round(v, 4) for name, v in recall.items()}, "target": target,
                       "queries": len(stored), "seconds": round(time.perf_counter() - started, 2)}
        log.info("%s index of %d vectors: %s gives recall@%d %.3f (stored) / %.3f (text-like)",
                 self.kind, len(ids), self.params, k, recall["stored"], recall["text_like"])

    def _candidate_ids(self, queries: np.ndarray, k: int) -> np.ndarray:
        """The ids a search would pick its top k from: the top k, or for IVF-PQ all the candidates it rescores."""
        _, found = self._faiss_search(queries, self._depth(k))
        return found

    def _depth(self, k: int) -> int:
        if self.kind != "ivfpq":
            return k
        return min(k * self.params["rescore_factor"], k + RESCORE_EXTRA_MAX, max(self.ntotal, 1))

    # -- contents ----------------------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def can_remove(self) -> bool:
        return self.kind != "hnsw"

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    def ids(self) -> np.ndarray:
        if self.kind in ("ivf", "ivfpq"):
            invlists = faiss.extract_index_ivf(self.index).invlists
            parts = [
                faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                for i in range(invlists.nlist)
                if invlists.list_size(i)
            ]
            return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
            )
            self._refresh_gpu()

    def remove(self, ids: np.ndarray) -> None:
        if not self.can_remove:
            raise NotImplementedError("HNSW indexes cannot remove vectors; rebuild instead")
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
            self._refresh_gpu()

    # -- search ------------------------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; missing slots have id -1."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if self.ntotal == 0:
            n = len(queries)
            return np.full((n, 1), -np.inf, dtype=np.float32), np.full((n, 1), -1, dtype=np.int64)
        if self.kind == "ivfpq":
            return self._rescored_search(queries, k)
        return self._faiss_search(queries, k)

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        gpu, module = self._gpu, self._gpu_module
        if gpu is not None and module is not None and k <= GPU_MAX_K:
            with _gpu_resources(module)[1]:
                return gpu.search(queries, k)
        if len(queries) > 1:
            return self.index.search(queries, k)
        # One query runs faster on one OpenMP thread: exact search over 100k vectors takes ~8 ms on one thread
        # and ~16 ms on two (bench/results/query.md). OpenMP keeps this setting per calling thread.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self.index.search(queries, k)
        finally:
            faiss.omp_set_num_threads(threads)

    def _rescored_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ candidates, rescored with their exact vectors. A candidate whose vector is gone (deleted since
        the index was last updated) is dropped."""
        if self.rescore_from is None:
            raise RuntimeError("this IVF-PQ index has no source of exact vectors to rescore with (rescore_from)")
        _, candidates = self._faiss_search(queries, self._depth(k))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        labels = np.full((len(queries), k), -1, dtype=np.int64)
        found_ids, found = self.rescore_from(np.unique(candidates[candidates >= 0]))
        if not len(found_ids):
            return scores, labels
        order = np.argsort(found_ids)
        found_ids, found = np.asarray(found_ids, dtype=np.int64)[order], np.asarray(found, dtype=np.float32)[order]
        for i, (query, row) in enumerate(zip(queries, candidates, strict=True)):
            at = np.clip(np.searchsorted(found_ids, row), 0, len(found_ids) - 1)
            keep = (row >= 0) & (found_ids[at] == row)
            exact = found[at[keep]] @ query
            top = np.argsort(-exact, kind="stable")[:k]
            scores[i, : len(top)] = exact[top]
            labels[i, : len(top)] = row[keep][top]
        return scores, labels

    # -- GPU ---------------------------------------------------------------------------------------------------

    def use_gpu(self, allowed: bool = True, faiss_module: Any = faiss) -> bool:
        """Search a GPU copy of the index when `gpu_eligible` says so; the CPU index stays what is updated and
        saved. Returns whether searches now run on the GPU."""
        self._gpu = None
        self._gpu_module = faiss_module if gpu_eligible(self.kind, allowed, faiss_module) else None
        if self._gpu_module is not None:
            self._clone_to_gpu()
        return self.on_gpu

    def _clone_to_gpu(self) -> None:
        module = self._gpu_module
        try:
            resources, lock = _gpu_resources(module)
            with lock:
                self._gpu = module.index_cpu_to_gpu(resources, 0, self.index)
        except RuntimeError as exc:  # out of GPU memory, say: the CPU index still answers
            log.warning("cannot copy the %s index of %d vectors to the GPU (%s); searching on the CPU",
                        self.kind, self.ntotal, exc)
            self._gpu = None
            self._gpu_module = None

    def _refresh_gpu(self) -> None:
        if self._gpu_module is not None:
            self._clone_to_gpu()

    # -- files -------------------------------------------------------------------------------------------------

    def meta(self, model: str, generation: int) -> IndexMeta:
        return IndexMeta(model=model, generation=generation, count=self.ntotal, kind=self.kind,
                         params=dict(self.params), recall=dict(self.recall), requested=self.requested)

    def save(self, path: Path, meta: IndexMeta) -> None:
        """Write the index and then its metadata, each through a temp file and a rename: a crash leaves
        either the old pair, or a new index beside old metadata, which reads as stale and is rebuilt."""
        path.parent.mkdir(parents=True, exist_ok=True)
        for target in (path, meta_path(path)):
            _remove_dead_writers_temps(target)
        _atomic_write(path, faiss.serialize_index(self.index).tobytes())
        _atomic_write(meta_path(path), json.dumps(asdict(meta)).encode())

    @classmethod
    def load(cls, path: Path, dim: int, rescore_from: VectorLookup | None = None) -> tuple[VectorIndex, IndexMeta]:
        """Read a saved index; raises on a missing, unreadable or foreign file."""
        meta = IndexMeta(**json.loads(meta_path(path).read_text()))
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        index = faiss.deserialize_index(data)
        if index.d != dim:
            raise ValueError(f"{path}: index has dimension {index.d}, expected {dim}")
        if index.ntotal != meta.count:
            raise ValueError(f"{path}: index holds {index.ntotal} vectors, its metadata says {meta.count}")
        if kind_of(index) != meta.kind:  # a crash between writing the index and its metadata
            raise ValueError(f"{path}: holds a {kind_of(index)} index, its metadata says {meta.kind}")
        # Files from before `requested` was recorded: an approximate kind was asked for or chosen by size; either
        # way a rebuild of that kind is right. Exact search may have been auto's pick for a smaller library.
        requested = meta.requested or (meta.kind if meta.kind != "flat" else "auto")
        loaded = cls(index, meta.kind, dim, recall=meta.recall, rescore_from=rescore_from, requested=requested)
        loaded.tune(meta.params)
        return loaded, meta


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


def kind_of(index: faiss.Index) -> str:
    """Which of INDEX_KINDS a (deserialised) FAISS index is."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        return "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat" if isinstance(inner, faiss.IndexFlat) else "?"
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf"
    return type(index).__name__


def meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _pq_subquantizers(dim: int) -> int:
    """Sub-vectors of PQ_SUBVECTOR_DIM dimensions, or the nearest coarser split that divides `dim`."""
    return next(m for m in range(max(dim // PQ_SUBVECTOR_DIM, 1), 0, -1) if dim % m == 0)


def _training_sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    n = min(len(vectors), max(nlist * 64, 10_000))
    if n == len(vectors):
        return vectors
    rng = np.random.default_rng(0)
    return vectors[rng.choice(len(vectors), size=n, replace=False)]


def _remove_dead_writers_temps(path: Path) -> None:
    """Delete the temp files of `path` that writers killed mid-write left (kill -9, OOM killer): each is as large
    as the index (GBs at 1M vectors), and every crash during a save would leave one more. A temp file whose
    writer (the pid in its name) is alive is kept: it may be renamed any moment."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # unique per writer
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an interrupt leaves the old file and no litter
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
