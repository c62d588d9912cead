"""FAISS over L2-normalised vectors, inner product, ids = image ids. Derived from SQLite, saved atomically.

An approximate index (ivf, ivfpq, hnsw) is checked when it is built: the recall guard searches it with a sample of
the stored vectors and with text-like probes made from them, compares with exact search, and raises nprobe /
efSearch / the rescoring depth (bounded) until recall@10 reaches a target. What it settled on and the recall it
measured are kept in the index metadata (the .json beside the .faiss file).

Large libraries: with a memory budget the builder picks the index by autofaiss's rules (see plan_index), trains it
on a sample and adds the vectors in chunks (build_from_chunks: 10M vectors never sit in RAM as float32 at once),
and an index file larger than a share of the free RAM is memory-mapped read-only when it is loaded."""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
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
# a stale index is rebuilt while the user waits.) Without a memory budget auto never picks IVF-PQ: at 1M vectors
# IVF-Flat needs ~2 GB of RAM and answers in a few ms (bench/results/query.md), so PQ only pays where RAM runs
# out (a budget says where: see plan_index), and it rescores from SQLite. HNSW misses text queries unless efSearch
# is very large, and cannot remove vectors.
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
# Budgeted builds follow autofaiss (criteo/autofaiss; autofaiss/external/optimize.py get_optimal_index_keys_v2,
# get_optimal_nb_clusters, get_optimal_quantization, get_optimal_train_size; metadata.py
# estimated_index_size_in_bytes): exact search while it fits (we keep our FLAT_LIMIT, autofaiss stops at 1,000 and
# prefers HNSW, which misses text queries here), IVF-Flat below IVF_FLAT_MAX vectors if it fits, else IVF-PQ with
# the largest code that fits the budget, counting 8 bytes of id per vector and the coarse quantizer. Lists: 4*sqrt(n)
# rounded to a power of two, autofaiss's rule below 1M vectors, kept above it (autofaiss jumps to 16,384 lists at 1M:
# there text queries needed nprobe 1024, 6 % of the lists, for recall 0.95, bench/results/scale.md), up to NLIST_MAX
# (reached at ~10M; autofaiss goes to 65,536 at 10M, but k-means over 65,536 lists wants 2.5M training points,
# hours on a 2-core machine). The coarse quantizer is flat (exact) unless an HNSW one is asked for
# (IVF{nlist}_HNSW32, autofaiss's choice from 1,000 lists): over these clustered 512-d centroids an HNSW graph puts
# only 57 % of vectors in their nearest list (efSearch 16) and picks a query's lists so poorly that, at 1M vectors
# and 16,384 lists, text recall@10 was 0.949 at nprobe 1024 (20 ms), where a flat quantizer reaches 0.954 at nprobe
# 256 (4.5 ms: comparing a query with 16,384 centroids costs ~2.7 ms on one core); bench/results/quantizer.md. A flat
# quantizer makes adding compare each vector with every centroid (a matrix product: ~100 s per 1M vectors at 16,384
# lists on 2 cores; the 10M build adds for 18 min, bench/results/scale.md). Training: 100 points a list, at least
# the 39 faiss asks for, at most TRAIN_MAX_POINTS unless 39 a list need more. Code sizes: autofaiss's list, down to
# sub-vectors of PQ_SUBVECTOR_DIM dimensions (it goes to 2: at dimension 512 those trained 2x and encoded 3x slower
# on this VM, 203 vs 110 s and 45 vs 14 us a vector). OPQ (a learned rotation before PQ) is an option, off by
# default: its training costs minutes here, and the exact rescoring recovers what PQ loses.
IVF_FLAT_MAX = 1_000_000
NLIST_MAX = 16_384
QUANTIZERS = ("flat", "hnsw")
HNSW_QUANTIZER_M = 32
# From this many lists k-means finds each training point's nearest centroid with an HNSW graph over the centroids
# (rebuilt each iteration) rather than by brute force: 16,384 lists x 640k points x 10 iterations take ~25 min on 2
# cores by brute force, ~1/5 of that with the graph. The approximate assignment costs little: centroids trained so
# gave the flat-quantizer recall above.
HNSW_TRAINING_FROM = 16_384
TRAIN_POINTS_PER_LIST = 100
TRAIN_MIN_POINTS_PER_LIST = 39
TRAIN_MAX_POINTS = 256_000
PQ_CODE_SIZES = (256, 128, 64, 48, 32, 24, 16, 8, 4)  # bytes a vector, 8-bit codes
CHUNK_VECTORS = 100_000  # what the chunked builder adds at a time (200 MB of float32 at dimension 512)
# An HNSW coarse quantizer (when asked for) finds each added vector's list at FAISS's default efSearch, 16: at 64
# (what searches at nprobe 32 use) adding 1M vectors took 235 s here, most of it in that search.
QUANTIZER_ADD_EF = 16
LATENCY_QUERIES = 100  # single queries timed after the guard, for the p50 latency it records
# A saved IVF index larger than this share of the available RAM is memory-mapped read-only on load.
MMAP_RAM_FRACTION = 0.5
# FAISS on a GPU: Flat and IVF-Flat have GPU versions. HNSW has none, and GPU IVF-PQ does not take our 128-byte
# codes. A GPU search returns at most GPU_MAX_K results per query; deeper fetches use the CPU copy.
GPU_KINDS = frozenset({"flat", "ivf"})
GPU_MAX_K = 2048

# image ids -> (the ids among them that have a stored vector, those vectors as float32 rows), in any order
VectorLookup = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
# a fresh pass over (ids, float32 vectors) chunks, the same ones in the same order on every call
VectorChunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


class ReadOnlyIndexError(RuntimeError):
    """A memory-mapped index cannot change: FAISS would abort the process. Load it into memory first."""


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
    build: dict[str, Any] = field(default_factory=dict)  # the plan, budget, timings and latency; see IndexPlan


@dataclass(frozen=True)
class IndexPlan:
    """What the builder will make, decided before it reads a vector: a FAISS factory string, its parts, and the
    bytes the index will take (file and RAM alike, but for FAISS's own small headers and IDMap2's reverse map)."""

    kind: str
    factory: str
    vectors: int
    dim: int
    nlist: int = 0
    m: int = 0  # PQ bytes a vector (8-bit codes)
    nbits: int = 0
    opq: bool = False
    quantizer: str = ""  # "flat" or "hnsw" for IVF kinds (see QUANTIZERS)
    train_points: int = 0
    estimated_bytes: int = 0
    memory_budget: int | None = None
    over_budget: bool = False


def plan_index(n: int, dim: int, kind: str = "auto", memory_budget: int | None = None,
               opq: bool = False, quantizer: str = "flat") -> IndexPlan:
    """The index to build for `n` vectors: without a budget as before (exact below FLAT_LIMIT, IVF-Flat above,
    IVF-PQ with 4-dimensional sub-vectors when asked for); with one, by autofaiss's rules (see INDEX_KINDS above).
    `quantizer` is the IVF kinds' coarse quantizer, flat or hnsw. Raises ValueError when auto can fit nothing in the
    budget."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    if quantizer not in QUANTIZERS:
        raise ValueError(f"unknown coarse quantizer {quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    if memory_budget is not None and memory_budget <= 0:
        raise ValueError(f"the memory budget must be positive, not {memory_budget}")
    budgeted = memory_budget is not None
    nlist = _lists(n, budgeted)

    def make(kind: str, m: int = 0) -> IndexPlan:
        if kind == "flat":
            return IndexPlan("flat", "IDMap2,Flat", n, dim, estimated_bytes=n * (4 * dim + 8),
                             memory_budget=memory_budget)
        if kind == "hnsw":
            return IndexPlan("hnsw", f"IDMap2,HNSW{HNSW_M}", n, dim, memory_budget=memory_budget,
                             estimated_bytes=n * (4 * dim + 8 + _hnsw_node_bytes(HNSW_M)))
        coarse = f"IVF{nlist}" + (f"_HNSW{HNSW_QUANTIZER_M}" if quantizer == "hnsw" else "")
        fixed = nlist * (4 * dim + 8) + (nlist * _hnsw_node_bytes(HNSW_QUANTIZER_M) if quantizer == "hnsw" else 0)
        train = _train_points(n, nlist, budgeted)
        if kind == "ivf":
            return IndexPlan("ivf", f"{coarse},Flat", n, dim, nlist=nlist, quantizer=quantizer, train_points=train,
                             estimated_bytes=fixed + n * (4 * dim + 8), memory_budget=memory_budget)
        fixed += 256 * dim * 4 + (dim * dim * 4 if opq else 0)  # PQ centroids, OPQ rotation
        return IndexPlan("ivfpq", f"{f'OPQ{m},' if opq else ''}{coarse},PQ{m}x{PQ_BITS}", n, dim, nlist=nlist, m=m,
                         nbits=PQ_BITS, opq=opq, quantizer=quantizer, train_points=train,
                         estimated_bytes=fixed + n * (m + 8), memory_budget=memory_budget)

    if kind in ("ivf", "ivfpq") and n == 0:
        kind = "flat"  # IVF must be trained on vectors; with none, exact search it is
    if kind == "ivfpq" and n < PQ_MIN_VECTORS:
        log.info("%d vectors are too few to train IVF-PQ codes (%d wanted); building IVF-Flat", n, PQ_MIN_VECTORS)
        kind = "ivf"
    if not budgeted:
        if kind == "auto":
            kind = "flat" if n < FLAT_LIMIT else "ivf"
        return make(kind, _pq_subquantizers(dim) if kind == "ivfpq" else 0)
    sizes = [m for m in PQ_CODE_SIZES if dim // m >= PQ_SUBVECTOR_DIM and (opq or dim % m == 0)]
    pq_plans = [make("ivfpq", m) for m in sizes] if n >= PQ_MIN_VECTORS else []
    fitting = [p for p in pq_plans if p.estimated_bytes <= memory_budget]
    if kind == "auto":
        flat, ivf = make("flat"), make("ivf") if n else None
        if n < FLAT_LIMIT and flat.estimated_bytes <= memory_budget or ivf is None:
            return flat
        if n < IVF_FLAT_MAX and ivf.estimated_bytes <= memory_budget:
            return ivf
        if fitting:
            return fitting[0]
        smallest = pq_plans[-1] if pq_plans else ivf
        what = f"IVF-PQ with {smallest.m}-byte codes" if pq_plans else \
            f"IVF-Flat; IVF-PQ needs {PQ_MIN_VECTORS:,} vectors to train its codes"
        raise ValueError(f"{n:,} vectors of dimension {dim} need at least {format_bytes(smallest.estimated_bytes)} "
                         f"({what}); the memory budget is {format_bytes(memory_budget)}")
    plan = (fitting[0] if fitting else pq_plans[-1]) if kind == "ivfpq" else make(kind)
    if plan.estimated_bytes > memory_budget:
        log.warning("a %s index of %d vectors needs about %s, over the %s memory budget", plan.kind, n,
                    format_bytes(plan.estimated_bytes), format_bytes(memory_budget))
        plan = IndexPlan(**{**asdict(plan), "over_budget": True})
    return plan


_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """'4GB' (decimal), '1.5GiB' (binary), '512MB', '2000000' (bytes) -> bytes. Raises ValueError saying what
    is accepted."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size: write a number and a unit, such as 512MB, 4GB or 1.5GiB")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"{text!r}: a memory budget must be more than 0 bytes")
    return size


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} GB"


def _lists(n: int, budgeted: bool) -> int:
    """IVF lists for n vectors: 4*sqrt(n) (bench/results/index_choice.md), with a budget rounded to a power of two
    as autofaiss's get_optimal_nb_clusters does, capped at NLIST_MAX; never fewer than 39 vectors a list."""
    wanted = int(IVF_LISTS_PER_SQRT_N * math.sqrt(max(n, 1)))
    if budgeted:
        wanted = 2 ** round(math.log2(max(wanted, 1)))
    return max(1, min(wanted, NLIST_MAX, max(n // TRAIN_MIN_POINTS_PER_LIST, 1)))


def _train_points(n: int, nlist: int, budgeted: bool) -> int:
    if not budgeted:
        return min(n, max(nlist * 64, 10_000))
    wanted = min(TRAIN_POINTS_PER_LIST * nlist, max(TRAIN_MIN_POINTS_PER_LIST * nlist, TRAIN_MAX_POINTS))
    return min(n, max(wanted, 10_000))


def _hnsw_node_bytes(m: int) -> int:
    """An HNSW node's links: 2m on level 0, m on each upper level (1/ln(m) of them on average), int32 each, plus its
    offset and level entries."""
    return int(4 * (2 * m + m / math.log(m))) + 12


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
                 requested: str = "auto", build_info: dict[str, Any] | None = None,
                 mapped_from: Path | None = None) -> None:
        self.index = index  # the CPU index: what is updated and saved
        self.kind = kind
        self.requested = requested  # what a rebuild asks for: "auto", or the kind someone chose
        self.dim = dim
        self.params: dict[str, int] = {}
        self.recall: dict[str, float] = dict(recall or {})
        self.build_info: dict[str, Any] = dict(build_info or {})
        self.rescore_from = rescore_from
        self.mapped_from = mapped_from  # the file a memory-mapped, read-only index reads its lists from
        self.gpu_shards = 0  # GPUs the search copy is spread over, when it is sharded
        self._gpu: Any = None  # a GPU copy that searches, when one is in use
        self._gpu_module: Any = None
        self.tune(params or self._default_params())

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, kind: str = "auto", *,
              rescore_from: VectorLookup | None = None, target_recall: float | None = RECALL_TARGET,
              nprobe: int | None = None, ef_search: int | None = None, memory_budget: int | None = None,
              latency_target_ms: float | None = None, opq: bool = False, quantizer: str = "flat") -> VectorIndex:
        """Make the index that suits this many vectors (exact below FLAT_LIMIT, IVF-Flat above; with a
        `memory_budget` in bytes, see plan_index), then let the recall guard tune an approximate one
        (`target_recall` None skips it). `nprobe` / `ef_search` are where the guard starts; with a
        `latency_target_ms` it settles for less recall where the recall target would be slower than that. IVF-PQ
        needs `rescore_from`: where the exact vectors of its candidates are read."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        return cls.build_from_chunks(lambda: [(ids, vectors)], len(ids), dim, kind, rescore_from=rescore_from,
                                     target_recall=target_recall, nprobe=nprobe, ef_search=ef_search,
                                     memory_budget=memory_budget, latency_target_ms=latency_target_ms, opq=opq,
                                     quantizer=quantizer, exact_from=array_lookup(ids, vectors))

    @classmethod
    def build_from_chunks(cls, chunks: VectorChunks, count: int, dim: int, kind: str = "auto", *,
                          rescore_from: VectorLookup | None = None, target_recall: float | None = RECALL_TARGET,
                          nprobe: int | None = None, ef_search: int | None = None,
                          memory_budget: int | None = None, latency_target_ms: float | None = None,
                          opq: bool = False, quantizer: str = "flat",
                          exact_from: VectorLookup | None = None) -> VectorIndex:
        """`build` over vectors that need not fit in RAM: `chunks()` is called for each pass over them (a sample
        for training and the guard's queries, then adding, which also finds the guard's exact neighbours), and
        `count` says how many it yields. `exact_from` gives the guard exact vectors of IVF-PQ candidates (default
        `rescore_from`)."""
        requested = kind
        plan = plan_index(count, dim, kind, memory_budget, opq, quantizer)
        if plan.kind == "ivfpq" and rescore_from is None:
            raise ValueError("an IVF-PQ index rescores its candidates with the exact vectors: pass rescore_from")
        started = time.perf_counter()
        params: dict[str, int] = {}
        guard = target_recall is not None and plan.kind != "flat" and count > 0
        rng = np.random.default_rng(0)
        guard_at = rng.choice(count, size=min(count, GUARD_QUERIES), replace=False) if guard else None
        train_at = (np.random.default_rng(1).choice(count, size=plan.train_points, replace=False)
                    if plan.train_points else None)
        stored, sample = _rows_at(chunks, [guard_at, train_at]) if guard or plan.train_points else (None, None)
        if plan.kind == "flat":
            index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif plan.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            params["ef_search"] = ef_search or HNSW_EF_SEARCH
            index = faiss.IndexIDMap2(hnsw)
        else:
            index = faiss.index_factory(dim, plan.factory.removeprefix("IDMap2,"), faiss.METRIC_INNER_PRODUCT)
            if plan.kind == "ivfpq":
                params["rescore_factor"] = RESCORE_FACTOR
            ivf = faiss.extract_index_ivf(index)
            assigner = None
            if plan.nlist >= HNSW_TRAINING_FROM:  # see HNSW_TRAINING_FROM
                assigner = faiss.IndexHNSWFlat(dim, HNSW_QUANTIZER_M, faiss.METRIC_L2)
                ivf.clustering_index = assigner
            index.train(sample)
            if assigner is not None:
                ivf.clustering_index = None
            params["nprobe"] = max(1, min(plan.nlist, nprobe or IVF_NPROBE))
        del sample
        trained = time.perf_counter()
        queries = np.vstack([stored, text_like_probes(stored, rng)]) if guard else None
        built = cls(index, plan.kind, dim, params, rescore_from=rescore_from, requested=requested)
        built._quantizer_ef(QUANTIZER_ADD_EF)
        truth = _TopK(queries, min(RECALL_K, count)) if guard else None
        added = 0
        for chunk_ids, chunk in chunks():
            chunk = np.ascontiguousarray(chunk, dtype=np.float32)
            chunk_ids = np.ascontiguousarray(chunk_ids, dtype=np.int64)
            if len(chunk_ids):
                index.add_with_ids(chunk, chunk_ids)
                if truth is not None:
                    truth.update(chunk, chunk_ids)
                added += len(chunk_ids)
        finished = time.perf_counter()
        built._quantizer_ef()
        built.build_info = {**asdict(plan), "requested": requested, "quantizer_requested": quantizer,
                            "vectors": added,
                            "train_s": round(trained - started, 2), "add_s": round(finished - trained, 2)}
        if latency_target_ms is not None:
            built.build_info["latency_target_ms"] = latency_target_ms
        if guard and queries is not None and truth is not None:
            probes = _GuardProbes(queries, len(stored), truth.scores, exact_from or rescore_from, added)
            built._guard_recall(probes, target_recall)
            built._tune_for_latency(probes, latency_target_ms, target_recall)
        built.build_info["seconds"] = round(time.perf_counter() - started, 2)
        log.info("built %s over %d vectors in %.1f s (train %.1f s, add %.1f s): about %s", plan.factory, added,
                 built.build_info["seconds"], trained - started, finished - trained,
                 format_bytes(plan.estimated_bytes))
        return built

    # -- search settings and the recall guard -----------------------------------------------------------------

    def tune(self, params: dict[str, int]) -> None:
        """Set search settings (nprobe, ef_search, rescore_factor); the others stay as they are."""
        self.params = {**self.params, **{k: int(v) for k, v in params.items()}}
        if "nprobe" in params and self.kind in ("ivf", "ivfpq"):
            faiss.extract_index_ivf(self.index).nprobe = int(params["nprobe"])
            self._quantizer_ef()
            if self._gpu is not None:
                self._clone_to_gpu()
        if "ef_search" in params and self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = int(params["ef_search"])

    def _quantizer_ef(self, ef_search: int | None = None) -> None:
        """An HNSW coarse quantizer looks for nprobe lists with efSearch 2*nprobe, as autofaiss sets it (or with
        `ef_search`)."""
        if self.kind in ("ivf", "ivfpq"):
            ivf = faiss.extract_index_ivf(self.index)
            quantizer = faiss.downcast_index(ivf.quantizer)
            if isinstance(quantizer, faiss.IndexHNSW):
                quantizer.hnsw.efSearch = ef_search or max(2 * int(ivf.nprobe), 16)

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
        if self.kind == "flat" or not len(ids):
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rng = np.random.default_rng(0)
        stored = vectors[rng.choice(len(ids), size=min(len(ids), GUARD_QUERIES), replace=False)]
        queries = np.vstack([stored, text_like_probes(stored, rng)])
        truth = _TopK(queries, min(RECALL_K, len(ids)))
        truth.update(vectors, ids)
        self._guard_recall(_GuardProbes(queries, len(stored), truth.scores, array_lookup(ids, vectors), len(ids)),
                           target)

    def _guard_recall(self, probes: _GuardProbes, target: float) -> None:
        """Raise the search settings until recall@10 against exact search reaches `target` for both kinds of
        query, or a bound is hit (then warn). The queries: GUARD_QUERIES stored vectors (what "find similar" and
        image queries look like), and as many text-like probes made from them (see text_like_probes), which are
        harder: near no image, with top scores close together. A setting passes when each kind's mean recall less
        one standard error of that mean reaches the target, so that sampling luck does not pass a setting that
        falls short on the queries users send."""
        started = time.perf_counter()
        recall, low = probes.measure(self)
        while low < target:
            tried = []
            for option in self._raised():
                before = dict(self.params)
                self.tune(option)
                tried.append((*probes.measure(self), option))
                self.tune(before)
            if not tried:
                log.warning("%s index of %d vectors: recall@%d is %.3f for stored vectors and %.3f for text-like "
                            "queries at %s, the most the recall guard may set; below the %.2f target",
                            self.kind, probes.count, probes.k, recall["stored"], recall["text_like"], self.params,
                            target)
                break
            recall, low, option = max(tried, key=lambda t: t[1])  # the first knob wins a tie
            self.tune(option)
        self.recall = {**{name: round(v, 4) for name, v in recall.items()}, "target": target,
                       "queries": probes.stored, "seconds": round(time.perf_counter() - started, 2)}
        log.info("%s index of %d vectors: %s gives recall@%d %.3f (stored) / %.3f (text-like)",
                 self.kind, probes.count, self.params, probes.k, recall["stored"], recall["text_like"])

    def _tune_for_latency(self, probes: _GuardProbes, target_ms: float | None, target_recall: float) -> None:
        """Record the p50 latency of one query at the guard's settings. Over `target_ms`, lower the search knob
        (nprobe, or efSearch) to the largest setting that answers within it, as autofaiss does, and record and
        warn that the recall target and the latency target cannot both be met on this machine."""
        p50 = probes.p50_ms(self)
        knob = "nprobe" if self.kind in ("ivf", "ivfpq") else "ef_search" if self.kind == "hnsw" else None
        if target_ms is not None and knob and p50 > target_ms and self.params[knob] > 1:
            guard_setting, low, high = self.params[knob], 1, self.params[knob] - 1
            best = 1
            while low <= high:  # the largest setting whose p50 is within the target
                middle = (low + high) // 2
                self.tune({knob: middle})
                if probes.p50_ms(self) <= target_ms:
                    best, low = middle, middle + 1
                else:
                    high = middle - 1
            self.tune({knob: best})
            p50 = probes.p50_ms(self)
            recall, _ = probes.measure(self)
            conflict = (f"recall@{probes.k} >= {target_recall} needs {knob} {guard_setting}, which answers in more "
                        f"than {target_ms} ms; {knob} {best} answers in {p50:.2f} ms with recall "
                        f"{recall['stored']:.3f} (stored) / {recall['text_like']:.3f} (text-like)")
            log.warning("%s index of %d vectors: %s", self.kind, probes.count, conflict)
            self.recall.update({name: round(v, 4) for name, v in recall.items()})
            self.build_info["conflict"] = conflict
        self.build_info["p50_ms"] = round(p50, 3)

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

    @property
    def mmapped(self) -> bool:
        return self.mapped_from is not None

    def in_memory(self) -> VectorIndex:
        """This index, changeable: a memory-mapped one is read again from its file, whole, into RAM (what an update
        of a large library costs; the next load maps the new file again)."""
        if self.mapped_from is None:
            return self
        log.info("reading %s into memory to update it", self.mapped_from)
        index = faiss.read_index(str(self.mapped_from))
        loaded = VectorIndex(index, self.kind, self.dim, self.params, self.recall, self.rescore_from, self.requested,
                             self.build_info)
        if self._gpu_module is not None:
            loaded.use_gpu(True, self._gpu_module)
        return loaded

    def _check_writable(self) -> None:
        if self.mapped_from is not None:
            raise ReadOnlyIndexError(f"{self.mapped_from} is memory-mapped read-only; load it with in_memory() (or "
                                     "rebuild it) to change it")

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._check_writable()
        if len(ids):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
            )
            self._refresh_gpu()

    def remove(self, ids: np.ndarray) -> None:
        if not self.can_remove:
            raise NotImplementedError("HNSW indexes cannot remove vectors; rebuild instead")
        self._check_writable()
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
        """Copy the index to the GPU, or shard it over every GPU when there are several (each holds 1/n of the
        vectors and searches its share; FAISS merges the results)."""
        module = self._gpu_module
        try:
            resources, lock = _gpu_resources(module)
            gpus = _gpu_count(module)
            with lock:
                if gpus > 1 and hasattr(module, "GpuMultipleClonerOptions"):
                    options = module.GpuMultipleClonerOptions()
                    options.shard = True
                    self._gpu = module.index_cpu_to_gpu_multiple_py(_shard_resources(module, resources, gpus),
                                                                    self.index, options, list(range(gpus)))
                    self.gpu_shards = gpus
                else:
                    self._gpu = module.index_cpu_to_gpu(resources, 0, self.index)
                    self.gpu_shards = 0
        except RuntimeError as exc:  # out of GPU memory, say: the CPU index still answers
            log.warning("cannot copy the %s index of %d vectors to the GPU (%s); searching on the CPU",
                        self.kind, self.ntotal, exc)
            self._gpu = None
            self._gpu_module = None
            self.gpu_shards = 0

    def _refresh_gpu(self) -> None:
        if self._gpu_module is not None:
            self._clone_to_gpu()

    # -- files -------------------------------------------------------------------------------------------------

    def meta(self, model: str, generation: int) -> IndexMeta:
        return IndexMeta(model=model, generation=generation, count=self.ntotal, kind=self.kind,
                         params=dict(self.params), recall=dict(self.recall), requested=self.requested,
                         build=dict(self.build_info))

    def save(self, path: Path, meta: IndexMeta) -> None:
        """Write the index and then its metadata, each through a temp file and a rename: a crash leaves
        either the old pair, or a new index beside old metadata, which reads as stale and is rebuilt. FAISS writes
        the file itself (a serialised copy in memory would double a large index's RAM)."""
        self._check_writable()
        path.parent.mkdir(parents=True, exist_ok=True)
        for target in (path, meta_path(path)):
            _remove_dead_writers_temps(target)
        _atomic_write(path, lambda tmp: faiss.write_index(self.index, str(tmp)))
        build = {**meta.build, "file_bytes": path.stat().st_size} if meta.build else meta.build
        self.build_info = dict(build)
        data = json.dumps(asdict(meta) | {"build": build}).encode()
        _atomic_write(meta_path(path), lambda tmp: tmp.write_bytes(data))

    @classmethod
    def load(cls, path: Path, dim: int, rescore_from: VectorLookup | None = None,
             mmap: bool | None = None) -> tuple[VectorIndex, IndexMeta]:
        """Read a saved index; raises on a missing, unreadable or foreign file. An IVF index is memory-mapped
        read-only (its lists stay on disk, in the page cache) when `mmap` says so, or by default when the file is
        larger than MMAP_RAM_FRACTION of the available RAM; such an index searches like any other, and is
        changed only through `in_memory()`."""
        meta = IndexMeta(**json.loads(meta_path(path).read_text()))
        size = path.stat().st_size
        if mmap is None:  # a file from before the recall guard is checked and saved again: not mapped
            mmap = bool(meta.recall) and size > MMAP_RAM_FRACTION * available_memory()
        mmap = mmap and meta.kind in ("ivf", "ivfpq")
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0)
        if index.d != dim:
            raise ValueError(f"{path}: index has dimension {index.d}, expected {dim}")
        if index.ntotal != meta.count:
            raise ValueError(f"{path}: index holds {index.ntotal} vectors, its metadata says {meta.count}")
        if kind_of(index) != meta.kind:  # a crash between writing the index and its metadata
            raise ValueError(f"{path}: holds a {kind_of(index)} index, its metadata says {meta.kind}")
        # Files from before `requested` was recorded: an approximate kind was asked for or chosen by size; either
        # way a rebuild of that kind is right. Exact search may have been auto's pick for a smaller library.
        requested = meta.requested or (meta.kind if meta.kind != "flat" else "auto")
        loaded = cls(index, meta.kind, dim, recall=meta.recall, rescore_from=rescore_from, requested=requested,
                     build_info=meta.build, mapped_from=path if mmap else None)
        loaded.tune(meta.params)
        if mmap:
            log.info("%s (%s) is memory-mapped read-only", path, format_bytes(size))
        return loaded, meta

    @property
    def build_options(self) -> dict[str, Any]:
        """The options it was built with that a rebuild should pass again (memory budget, latency target, OPQ, an
        HNSW coarse quantizer asked for: files from before it was an option chose one themselves and get a flat one).
        """
        info = self.build_info
        return {"memory_budget": info.get("memory_budget"), "latency_target_ms": info.get("latency_target_ms"),
                "opq": bool(info.get("opq", False)), "quantizer": info.get("quantizer_requested", "flat")}


def available_memory() -> int:
    """Bytes of RAM available to new allocations (MemAvailable), or all of it where that cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gpu_count(module: Any) -> int:
    try:
        return int(module.get_num_gpus())
    except (AttributeError, RuntimeError):
        return 0


_SHARD_RESOURCES: dict[int, list[Any]] = {}  # id(faiss module) -> one StandardGpuResources per GPU


def _shard_resources(module: Any, first: Any, gpus: int) -> list[Any]:
    """Resources for GPUs 0..gpus-1, GPU 0's being the process's shared one; used under its lock."""
    have = _SHARD_RESOURCES.setdefault(id(module), [first])
    while len(have) < gpus:
        have.append(module.StandardGpuResources())
    return have[:gpus]


def array_lookup(ids: np.ndarray, vectors: np.ndarray) -> VectorLookup:
    """A VectorLookup over vectors in memory."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = np.asarray(ids, dtype=np.int64)[order]

    def lookup(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.clip(np.searchsorted(sorted_ids, wanted), 0, max(len(sorted_ids) - 1, 0))
        keep = (sorted_ids[at] == wanted) if len(sorted_ids) else np.zeros(len(wanted), dtype=bool)
        return np.asarray(wanted, dtype=np.int64)[keep], vectors[order[at[keep]]]

    return lookup


def exact_search(queries: np.ndarray, chunks: VectorChunks, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, ids) of `queries` over every chunk, one chunk in memory at a time."""
    top = _TopK(np.ascontiguousarray(queries, dtype=np.float32), k)
    for ids, vectors in chunks():
        top.update(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return top.scores, top.ids


class _TopK:
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


class _GuardProbes:
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
                found = index._candidate_ids(part, self.k)
                have, vectors = self.exact(np.unique(found[found >= 0])) if self.exact else (found[:0, 0], None)
                order = np.argsort(have)
                have = np.asarray(have, dtype=np.int64)[order]
                at = np.clip(np.searchsorted(have, found), 0, max(len(have) - 1, 0))
                known = (found >= 0) & (have[at] == found) if len(have) else np.zeros(found.shape, dtype=bool)
                scores = np.full(found.shape, -np.inf, dtype=np.float32)
                if len(have):
                    rows = np.asarray(vectors, dtype=np.float32)[order][at]
                    scores = np.where(known, np.einsum("qcd,qd->qc", rows, part), -np.inf)
            else:
                scores, found = index._faiss_search(part, self.k)
                scores = np.where(found >= 0, scores, -np.inf)
            top = -np.sort(-scores, axis=1)[:, : self.k]  # exact rescoring keeps the k best candidates
            hit[lo : lo + 50] = (top >= self.threshold[lo : lo + 50, None]).mean(axis=1)
        parts = {"stored": hit[: self.stored], "text_like": hit[self.stored :]}
        low = min(h.mean() - h.std() / math.sqrt(len(h)) for h in parts.values())
        return {name: float(h.mean()) for name, h in parts.items()}, float(low)

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


def _rows_at(chunks: VectorChunks, positions: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """One pass over the chunks: for each array of row positions (or None), those rows, in that order."""
    wanted = [None if p is None else np.asarray(p, dtype=np.int64) for p in positions]
    found: list[np.ndarray | None] = [None] * len(wanted)
    start = 0
    for _, vectors in chunks():
        end = start + len(vectors)
        for i, at in enumerate(wanted):
            if at is None:
                continue
            if found[i] is None:
                found[i] = np.zeros((len(at), vectors.shape[1]), dtype=np.float32)
            inside = (at >= start) & (at < end)
            found[i][inside] = vectors[at[inside] - start]
        start = end
    return [None if f is None or at is None else f[at < start] for f, at in zip(found, wanted, strict=True)]


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
    if isinstance(index, faiss.IndexPreTransform):  # OPQ before IVF-PQ
        index = faiss.downcast_index(index.index)
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


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a temp file, which is synced and renamed over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # unique per writer
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an interrupt leaves the old file and no litter
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
