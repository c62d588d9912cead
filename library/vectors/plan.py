"""The index choice, made before a vector is read: which FAISS index suits n vectors (and a memory budget), its
parts, and the bytes it will take. Also the sizes a budget is written in."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

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
TRAIN_POINTS_PER_LIST = 100
TRAIN_MIN_POINTS_PER_LIST = 39
TRAIN_MAX_POINTS = 256_000
PQ_CODE_SIZES = (256, 128, 64, 48, 32, 24, 16, 8, 4)  # bytes a vector, 8-bit codes


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
    make: Callable[..., IndexPlan] = partial(_plan_of, n=n, dim=dim, memory_budget=memory_budget, opq=opq,
                                             quantizer=quantizer)
    if kind in ("ivf", "ivfpq") and n == 0:
        kind = "flat"  # IVF must be trained on vectors; with none, exact search it is
    if kind == "ivfpq" and n < PQ_MIN_VECTORS:
        log.info("%d vectors are too few to train IVF-PQ codes (%d wanted); building IVF-Flat", n, PQ_MIN_VECTORS)
        kind = "ivf"
    if memory_budget is None:
        if kind == "auto":
            kind = "flat" if n < FLAT_LIMIT else "ivf"
        return make(kind, _pq_subquantizers(dim) if kind == "ivfpq" else 0)
    sizes = [m for m in PQ_CODE_SIZES if dim // m >= PQ_SUBVECTOR_DIM and (opq or dim % m == 0)]
    pq_plans = [make("ivfpq", m) for m in sizes] if n >= PQ_MIN_VECTORS else []
    fitting = [p for p in pq_plans if p.estimated_bytes <= memory_budget]
    if kind == "auto":
        return _auto_within(n, dim, memory_budget, make, pq_plans, fitting)
    plan = (fitting[0] if fitting else pq_plans[-1]) if kind == "ivfpq" else make(kind)
    if plan.estimated_bytes > memory_budget:
        log.warning("a %s index of %d vectors needs about %s, over the %s memory budget", plan.kind, n,
                    format_bytes(plan.estimated_bytes), format_bytes(memory_budget))
        plan = IndexPlan(**{**asdict(plan), "over_budget": True})
    return plan


def _auto_within(n: int, dim: int, memory_budget: int, make: Callable[..., IndexPlan],
                 pq_plans: list[IndexPlan], fitting: list[IndexPlan]) -> IndexPlan:
    """auto with a budget: Flat below FLAT_LIMIT if it fits, IVF-Flat below IVF_FLAT_MAX if it fits, else the
    largest IVF-PQ code that fits; a ValueError saying what the smallest would need when none does."""
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


def _plan_of(kind: str, m: int = 0, *, n: int, dim: int, memory_budget: int | None, opq: bool,
             quantizer: str) -> IndexPlan:
    """The plan of one kind (and PQ code size `m`) with the bytes it will take."""
    if kind == "flat":
        return IndexPlan("flat", "IDMap2,Flat", n, dim, estimated_bytes=n * (4 * dim + 8), memory_budget=memory_budget)
    if kind == "hnsw":
        return IndexPlan("hnsw", f"IDMap2,HNSW{HNSW_M}", n, dim, memory_budget=memory_budget,
                         estimated_bytes=n * (4 * dim + 8 + _hnsw_node_bytes(HNSW_M)))
    budgeted = memory_budget is not None
    nlist = _lists(n, budgeted)
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


def _pq_subquantizers(dim: int) -> int:
    """Sub-vectors of PQ_SUBVECTOR_DIM dimensions, or the nearest coarser split that divides `dim`."""
    return next(m for m in range(max(dim // PQ_SUBVECTOR_DIM, 1), 0, -1) if dim % m == 0)


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
