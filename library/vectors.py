"""FAISS over L2-normalised vectors, inner product, ids = image ids. Derived from SQLite, saved atomically."""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

# Measured in bench/results/index_choice.md (2-core CPU): exact search answers in ~11 ms at 100k vectors and
# ~34 ms at 300k. Above 100k, IVF-Flat with 4*sqrt(n) lists and nprobe 32 keeps recall@10 >= 0.95 at ~1 ms a
# query and trains in 7 s (100k) to 25 s (300k); unlike HNSW it can remove vectors, so re-runs update it in place.
# (8*sqrt(n) lists answer in ~0.3 ms but train 3x longer, and a stale index is rebuilt while the user waits.)
FLAT_LIMIT = 100_000
IVF_LISTS_PER_SQRT_N = 4
IVF_NPROBE = 32
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexMeta:
    """What a saved index was built from: compared with SQLite on load to detect a stale file."""

    model: str
    generation: int
    count: int
    kind: str


class VectorIndex:
    """A FAISS index of one model's vectors, searchable by batches of query vectors."""

    def __init__(self, index: faiss.Index, kind: str, dim: int) -> None:
        self.index = index
        self.kind = kind
        self.dim = dim

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, kind: str = "auto") -> VectorIndex:
        """Make the index that suits this many vectors: exact below FLAT_LIMIT, approximate above."""
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
        n = len(ids)
        if kind == "auto":
            kind = "flat" if n < FLAT_LIMIT else "ivf"
        if kind == "ivf" and n == 0:
            kind = "flat"  # IVF must be trained on vectors; with none, exact search it is
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if kind == "flat":
            index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif kind == "ivf":
            nlist = max(1, min(int(IVF_LISTS_PER_SQRT_N * math.sqrt(max(n, 1))), max(n // 39, 1)))
            quantizer = faiss.IndexFlatIP(dim)
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            if n:
                ivf.train(_training_sample(vectors, nlist))
            ivf.nprobe = min(nlist, IVF_NPROBE)
            index = ivf
        else:
            hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = 80
            hnsw.hnsw.efSearch = 64
            index = faiss.IndexIDMap2(hnsw)
        if n:
            index.add_with_ids(vectors, ids)
        return cls(index, kind, dim)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def can_remove(self) -> bool:
        return self.kind != "hnsw"

    def ids(self) -> np.ndarray:
        if self.kind == "ivf":
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

    def remove(self, ids: np.ndarray) -> None:
        if not self.can_remove:
            raise NotImplementedError("HNSW indexes cannot remove vectors; rebuild instead")
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; missing slots have id -1."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if self.ntotal == 0:
            n = len(queries)
            return np.full((n, 1), -np.inf, dtype=np.float32), np.full((n, 1), -1, dtype=np.int64)
        return self.index.search(queries, k)

    def save(self, path: Path, meta: IndexMeta) -> None:
        """Write the index and then its metadata, each through a temp file and a rename: a crash leaves
        either the old pair, or a new index beside old metadata, which reads as stale and is rebuilt."""
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, faiss.serialize_index(self.index).tobytes())
        _atomic_write(meta_path(path), json.dumps(asdict(meta)).encode())

    @classmethod
    def load(cls, path: Path, dim: int) -> tuple[VectorIndex, IndexMeta]:
        """Read a saved index; raises on a missing, unreadable or foreign file."""
        meta = IndexMeta(**json.loads(meta_path(path).read_text()))
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        index = faiss.deserialize_index(data)
        if index.d != dim:
            raise ValueError(f"{path}: index has dimension {index.d}, expected {dim}")
        if index.ntotal != meta.count:
            raise ValueError(f"{path}: index holds {index.ntotal} vectors, its metadata says {meta.count}")
        return cls(index, meta.kind, dim), meta


def meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _training_sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    n = min(len(vectors), max(nlist * 64, 10_000))
    if n == len(vectors):
        return vectors
    rng = np.random.default_rng(0)
    return vectors[rng.choice(len(vectors), size=n, replace=False)]


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
