"""VectorIndex: one model's FAISS index, built to its plan and guarded, searched, changed and saved."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from vlsearch.library.vectors.build import QUANTIZER_ADD_EF, add_chunks, trained_index
from vlsearch.library.vectors.files import IndexMeta, read_index, write_index
from vlsearch.library.vectors.gpu import GpuCopy, gpu_eligible
from vlsearch.library.vectors.guard import (
    GUARD_QUERIES,
    RECALL_K,
    RECALL_TARGET,
    GuardProbes,
    TopK,
    check_recall_of,
    guard_recall,
    probe_queries,
    tune_for_latency,
)
from vlsearch.library.vectors.plan import RESCORE_EXTRA_MAX, RESCORE_FACTOR, format_bytes, plan_index
from vlsearch.library.vectors.sources import VectorChunks, VectorLookup, array_lookup, rows_at

if TYPE_CHECKING:
    from vlsearch.library.vectors.torch_exact import TorchExactCopy

log = logging.getLogger(__name__)


class ReadOnlyIndexError(RuntimeError):
    """A memory-mapped index cannot change: FAISS would abort the process. Load it into memory first."""


@contextmanager
def omp_threads(threads: int) -> Iterator[None]:
    """FAISS on `threads` OpenMP threads for the block, then back to what it was (OpenMP keeps it per thread)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


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
        self._gpu: GpuCopy | TorchExactCopy | None = None  # a GPU copy that searches, when one is in use
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
        guard = target_recall is not None and plan.kind != "flat" and count > 0
        rng = np.random.default_rng(0)
        guard_at = rng.choice(count, size=min(count, GUARD_QUERIES), replace=False) if guard else None
        train_at = (np.random.default_rng(1).choice(count, size=plan.train_points, replace=False)
                    if plan.train_points else None)
        stored, sample = rows_at(chunks, [guard_at, train_at]) if guard or plan.train_points else (None, None)
        index, params = trained_index(plan, sample, nprobe, ef_search)
        del sample
        trained = time.perf_counter()
        queries = probe_queries(stored, rng) if guard else None
        built = cls(index, plan.kind, dim, params, rescore_from=rescore_from, requested=requested)
        built._quantizer_ef(QUANTIZER_ADD_EF)
        truth = TopK(queries, min(RECALL_K, count)) if guard else None
        added = add_chunks(index, chunks, truth)
        finished = time.perf_counter()
        built._quantizer_ef()
        built.build_info = {**asdict(plan), "requested": requested, "quantizer_requested": quantizer,
                            "vectors": added,
                            "train_s": round(trained - started, 2), "add_s": round(finished - trained, 2)}
        if latency_target_ms is not None:
            built.build_info["latency_target_ms"] = latency_target_ms
        if guard and queries is not None and truth is not None:
            probes = GuardProbes(queries, len(stored), truth.scores, exact_from or rescore_from, added)
            guard_recall(built, probes, target_recall)
            tune_for_latency(built, probes, latency_target_ms, target_recall)
        built.build_info["seconds"] = round(time.perf_counter() - started, 2)
        log.info("built %s over %d vectors in %.1f s (train %.1f s, add %.1f s): about %s", plan.factory, added,
                 built.build_info["seconds"], trained - started, finished - trained,
                 format_bytes(plan.estimated_bytes))
        return built

    # -- search settings -----------------------------------------------------------------------------------------

    def tune(self, params: dict[str, int]) -> None:
        """Set search settings (nprobe, ef_search, rescore_factor); the others stay as they are."""
        self.params = {**self.params, **{k: int(v) for k, v in params.items()}}
        if "nprobe" in params and self.kind in ("ivf", "ivfpq"):
            faiss.extract_index_ivf(self.index).nprobe = int(params["nprobe"])
            self._quantizer_ef()
            if self._gpu is not None and self._gpu.follows_params:
                self._refresh_gpu()
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

    def check_recall(self, ids: np.ndarray, vectors: np.ndarray, target: float = RECALL_TARGET) -> None:
        """Run the recall guard on an index that was built without it: `ids` and `vectors` are what it holds."""
        check_recall_of(self, ids, vectors, target)

    # -- contents ----------------------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def can_remove(self) -> bool:
        return self.kind != "hnsw"

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
        gpu = self._gpu
        if isinstance(gpu, GpuCopy):
            loaded.use_gpu(True, gpu.module)
        elif gpu is not None:
            loaded.use_gpu(True, torch_device=str(gpu.device))
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

    def search(self, queries: np.ndarray, k: int, probe_factor: int = 1, probe_cap: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; missing slots have id -1. For this search only, an IVF index looks in
        `probe_factor` times its lists (a search whose filter drops most candidates), at most `probe_cap` (a
        search whose answers lie in the nearest lists: duplicates)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if self.ntotal == 0:
            n = len(queries)
            return np.full((n, 1), -np.inf, dtype=np.float32), np.full((n, 1), -1, dtype=np.int64)
        if self.kind == "ivfpq":
            return self._rescored_search(queries, k)
        return self._faiss_search(queries, k, probe_factor, probe_cap)

    def candidates(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The (FAISS scores, ids) a search picks its top k from: the top k, or for IVF-PQ all the candidates it
        rescores (by approximate scores)."""
        return self._faiss_search(queries, self._depth(k))

    def _depth(self, k: int) -> int:
        if self.kind != "ivfpq":
            return k
        return min(k * self.params["rescore_factor"], k + RESCORE_EXTRA_MAX, max(self.ntotal, 1))

    def _faiss_search(self, queries: np.ndarray, k: int, probe_factor: int = 1, probe_cap: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        gpu = self._gpu
        if gpu is not None and (gpu.max_k is None or k <= gpu.max_k):
            return gpu.search(queries, k)
        params = self._probes(probe_factor, probe_cap)
        if len(queries) > 1:
            return self.index.search(queries, k, params=params)
        # One query runs faster on one OpenMP thread, and leaves the other cores to concurrent queries: exact search
        # over 100k vectors, 14.2 ms p50 on one thread, 17.2 on two (bench/results/query.md). Set per calling thread.
        with omp_threads(1):
            return self.index.search(queries, k, params=params)

    def _probes(self, probe_factor: int, probe_cap: int | None) -> faiss.SearchParametersIVF | None:
        """Per-search IVF settings probing `probe_factor` times the lists, at most `probe_cap` (the shared index is
        left as it is); None where that is the index's own setting."""
        if self.kind not in ("ivf", "ivfpq"):
            return None
        ivf = faiss.extract_index_ivf(self.index)
        nprobe = max(1, min(ivf.nlist, ivf.nprobe * probe_factor, probe_cap or ivf.nlist))
        return None if nprobe == ivf.nprobe else faiss.SearchParametersIVF(nprobe=nprobe)

    def _rescored_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ candidates, rescored with their exact vectors. A candidate whose vector is gone (deleted since
        the index was last updated) is dropped."""
        if self.rescore_from is None:
            raise RuntimeError("this IVF-PQ index has no source of exact vectors to rescore with (rescore_from)")
        _, candidates = self.candidates(queries, k)
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

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    @property
    def gpu_shards(self) -> int:
        """GPUs the search copy is spread over, when it is sharded (0 otherwise)."""
        gpu = self._gpu
        return gpu.shards if gpu is not None else 0

    def use_gpu(self, allowed: bool = True, faiss_module: Any = faiss, torch_device: str | None = None) -> bool:
        """Search a GPU copy of the index, when `allowed`: FAISS's own where `gpu_eligible` says so, else an exact
        torch copy where `exact_copy_device` finds room (on `torch_device` where given). The CPU index stays what is
        updated and saved. Returns whether searches now run on the copy."""
        self._gpu = None
        if not allowed:
            return False
        if gpu_eligible(self.kind, allowed, faiss_module):
            copy: GpuCopy | TorchExactCopy = GpuCopy(faiss_module)
        else:
            # torch is imported here, where a GPU is wanted: the library's other users need not load it
            from vlsearch.library.vectors.torch_exact import TorchExactCopy, exact_copy_device

            device = exact_copy_device(self.kind, self.ntotal, self.dim, torch_device)
            if device is None:
                return False
            copy = TorchExactCopy(device)
        self._gpu = copy if copy.clone(self.index, self.kind) else None
        return self.on_gpu

    @property
    def gpu_search(self) -> str | None:
        """What searches on the GPU: "faiss", "torch exact", or None (the CPU index)."""
        gpu = self._gpu
        return None if gpu is None else "faiss" if isinstance(gpu, GpuCopy) else "torch exact"

    def _refresh_gpu(self) -> None:
        """A fresh GPU copy after the CPU index changed; searches fall back to the CPU where one cannot be made."""
        gpu = self._gpu
        if gpu is not None and not gpu.clone(self.index, self.kind):
            self._gpu = None

    # -- files -------------------------------------------------------------------------------------------------

    def meta(self, model: str, generation: int) -> IndexMeta:
        return IndexMeta(model=model, generation=generation, count=self.ntotal, kind=self.kind,
                         params=dict(self.params), recall=dict(self.recall), requested=self.requested,
                         build=dict(self.build_info))

    def save(self, path: Path, meta: IndexMeta) -> None:
        """Write the index and its metadata atomically (see write_index); a memory-mapped index cannot be saved."""
        self._check_writable()
        self.build_info = write_index(self.index, path, meta)

    @classmethod
    def load(cls, path: Path, dim: int, rescore_from: VectorLookup | None = None,
             mmap: bool | None = None) -> tuple[VectorIndex, IndexMeta]:
        """Read a saved index; raises on a missing, unreadable or foreign file. A memory-mapped one (see
        read_index) searches like any other, and is changed only through `in_memory()`."""
        index, meta, mapped = read_index(path, dim, mmap)
        # Files from before `requested` was recorded: an approximate kind was asked for or chosen by size; either
        # way a rebuild of that kind is right. Exact search may have been auto's pick for a smaller library.
        requested = meta.requested or (meta.kind if meta.kind != "flat" else "auto")
        loaded = cls(index, meta.kind, dim, recall=meta.recall, rescore_from=rescore_from, requested=requested,
                     build_info=meta.build, mapped_from=path if mapped else None)
        loaded.tune(meta.params)
        return loaded, meta

    @property
    def build_options(self) -> dict[str, Any]:
        """The options it was built with that a rebuild should pass again (memory budget, latency target, OPQ, an
        HNSW coarse quantizer asked for: files from before it was an option chose one themselves and get a flat one).
        """
        info = self.build_info
        return {"memory_budget": info.get("memory_budget"), "latency_target_ms": info.get("latency_target_ms"),
                "opq": bool(info.get("opq", False)), "quantizer": info.get("quantizer_requested", "flat")}
