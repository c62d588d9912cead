"""Exact search on a GPU without faiss-gpu: an index's vectors as one float16 matrix in the GPU's memory, searched
with a matrix product and top-k in torch. faiss-gpu wheels exist for few CUDA versions and weigh ~135 MB; torch
is already here for the encoders, so a server with a GPU and faiss-cpu still searches on its GPU.

The vectors come from SQLite's float16 BLOBs, so the float16 matrix holds them exactly; only the query is rounded
for the product. The product picks `depth` candidates (k plus a margin) by float16 scores, which are rescored in
float32 with the unrounded query: the same top k, in the same order, as the CPU's exact flat index."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import faiss
import numpy as np
import torch

log = logging.getLogger(__name__)
ArrayLike = Any  # a numpy array or a torch tensor

# Kinds whose FAISS index holds every vector exactly (IVF-Flat's lists keep raw floats; HNSW-Flat its storage),
# so the copy can be made from the index alone. IVF-PQ keeps codes: its exact vectors are in SQLite only.
EXACT_COPY_KINDS = frozenset({"flat", "ivf", "hnsw"})
# Share of the GPU's free memory the matrix (2 bytes a dimension) and ids (8 bytes) may take; the rest stays for
# the encoders, the scores of a batch of queries and the next copy made while this one still answers.
GPU_MEMORY_SHARE = 0.4
CHUNK_ROWS = 1 << 21  # rows scored at once: 32 queries x 2M rows of float16 scores are 128 MB
# Candidates kept beyond k (at least k more) for the float32 rescoring: a float16 score is off by ~1e-3 at most
# (the rounded query and score); the true top k is lost only where over 32 others sit that close to the k-th best.
RESCORE_MARGIN = 32


def exact_copy_device(kind: str, count: int, dim: int, device: str | None = None) -> str | None:
    """The torch device an exact copy of this index should search on, or None: `device` where given (tests pass
    "cpu"), else the first CUDA GPU when torch sees one and the copy fits its share of the free memory."""
    if kind not in EXACT_COPY_KINDS or count == 0:
        return None
    if device is not None:
        return device
    if not torch.cuda.is_available():
        return None
    needed = count * (2 * dim + 8)
    free, _ = torch.cuda.mem_get_info(0)
    if needed > GPU_MEMORY_SHARE * free:
        log.info("an exact GPU copy of %d vectors needs %.1f GB, more than %.0f%% of the GPU's %.1f GB free; "
                 "searching on the CPU", count, needed / 1e9, 100 * GPU_MEMORY_SHARE, free / 1e9)
        return None
    return "cuda:0"


def stored_vectors(index: faiss.Index, kind: str, chunk: int = CHUNK_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 vectors) of everything a flat, HNSW-Flat or IVF-Flat index holds, a chunk or list at a time."""
    if kind in ("flat", "hnsw"):
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        for start in range(0, len(ids), chunk):
            end = min(start + chunk, len(ids))
            yield ids[start:end], index.index.reconstruct_n(start, end - start)
        return
    ivf = faiss.extract_index_ivf(index)
    if ivf.code_size != 4 * ivf.d:
        raise ValueError(f"an IVF index with {ivf.code_size}-byte codes does not hold its vectors exactly")
    lists = ivf.invlists
    for at in range(lists.nlist):
        size = lists.list_size(at)
        if size:
            ids = faiss.rev_swig_ptr(lists.get_ids(at), size).copy()
            codes = faiss.rev_swig_ptr(lists.get_codes(at), size * ivf.code_size).copy()
            yield ids, codes.view(np.float32).reshape(size, ivf.d)


class TorchExactCopy:
    """An exact copy of a CPU index's vectors on a torch device, searched there; answers any k."""

    max_k: int | None = None
    shards = 0
    follows_params = False  # exact whatever nprobe / efSearch say: a change of settings needs no new copy

    def __init__(self, device: str, chunk_rows: int = CHUNK_ROWS) -> None:
        self.device = torch.device(device)
        self.chunk_rows = chunk_rows
        # ((n, dim) float16 vectors, (n,) int64 image ids), replaced as one so that a search never mixes copies
        self.held: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def matrix(self) -> torch.Tensor:
        assert self.held is not None, "clone() first"
        return self.held[0]

    @property
    def ids(self) -> torch.Tensor:
        assert self.held is not None, "clone() first"
        return self.held[1]

    def clone(self, cpu_index: faiss.Index, kind: str) -> bool:
        """Copy what `cpu_index` holds to the device. False, after a warning, where it does not fit."""
        return self.fill(stored_vectors(cpu_index, kind, self.chunk_rows), int(cpu_index.ntotal), int(cpu_index.d))

    def fill(self, chunks: Iterable[tuple[ArrayLike, ArrayLike]], count: int, dim: int) -> bool:
        """Hold the `count` (ids, vectors) that `chunks` yields (numpy arrays or tensors) on the device; False,
        after a warning, where they do not fit (the copy searched so far stays)."""
        try:
            matrix = torch.empty((count, dim), dtype=torch.float16, device=self.device)
            ids = torch.empty(count, dtype=torch.int64, device=self.device)
            row = 0
            for chunk_ids, vectors in chunks:
                end = row + len(chunk_ids)
                matrix[row:end] = torch.as_tensor(vectors).to(self.device, torch.float16)
                ids[row:end] = torch.as_tensor(chunk_ids).to(self.device)
                row = end
        except torch.OutOfMemoryError as exc:
            log.warning("cannot hold %d vectors on %s (%s); searching on the CPU", count, self.device, exc)
            return False
        if row != count:
            raise ValueError(f"expected {count} vectors, got {row}")
        self.held = (matrix, ids)
        return True

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) of each query row, scores as the CPU's flat index gives them."""
        assert self.held is not None, "clone() first"
        matrix, ids = self.held
        exact = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.device)
        k = min(k, len(matrix))
        depth = min(len(matrix), k + max(k, RESCORE_MARGIN))
        rows = self._candidates(matrix, exact.to(torch.float16), depth)
        candidates = matrix[rows].float()  # (queries, depth, dim)
        rescored = torch.einsum("qkd,qd->qk", candidates, exact)
        scores, best = rescored.topk(k, dim=1)
        found = ids[rows.gather(1, best)]
        return scores.cpu().numpy(), found.cpu().numpy()

    def _candidates(self, matrix: torch.Tensor, queries: torch.Tensor, depth: int) -> torch.Tensor:
        """Rows of `matrix` with the `depth` best float16 scores of each query, found a chunk of rows at a time."""
        best_scores, best_rows = [], []
        for start in range(0, len(matrix), self.chunk_rows):
            scores = queries @ matrix[start:start + self.chunk_rows].T
            top = scores.topk(min(depth, scores.shape[1]), dim=1)
            best_scores.append(top.values)
            best_rows.append(top.indices + start)
        if len(best_scores) == 1:
            return best_rows[0]
        merged = torch.cat(best_scores, dim=1).topk(depth, dim=1).indices
        return torch.cat(best_rows, dim=1).gather(1, merged)
