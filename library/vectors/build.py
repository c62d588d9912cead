"""Training and filling a planned FAISS index: the index a plan names, trained on its sample, and the chunks added
to it one at a time."""

from __future__ import annotations

import faiss
import numpy as np

from vlsearch.library.vectors.guard import TopK
from vlsearch.library.vectors.plan import (
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    HNSW_QUANTIZER_M,
    IVF_NPROBE,
    RESCORE_FACTOR,
    IndexPlan,
)
from vlsearch.library.vectors.sources import VectorChunks

# From this many lists k-means finds each training point's nearest centroid with an HNSW graph over the centroids
# (rebuilt each iteration) rather than by brute force: 16,384 lists x 640k points x 10 iterations take ~25 min on 2
# cores by brute force, ~1/5 of that with the graph. The approximate assignment costs little: centroids trained so
# gave the flat-quantizer recall noted in plan.py (bench/results/quantizer.md).
HNSW_TRAINING_FROM = 16_384
# An HNSW coarse quantizer (when asked for) finds each added vector's list at FAISS's default efSearch, 16: at 64
# (what searches at nprobe 32 use) adding 1M vectors took 235 s here, most of it in that search.
QUANTIZER_ADD_EF = 16


def trained_index(plan: IndexPlan, sample: np.ndarray | None, nprobe: int | None,
                  ef_search: int | None) -> tuple[faiss.Index, dict[str, int]]:
    """The empty FAISS index `plan` names, trained on `sample` where it needs training, and the search settings
    the recall guard starts from (`nprobe` / `ef_search` where given)."""
    params: dict[str, int] = {}
    if plan.kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(plan.dim)), params
    if plan.kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(plan.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        params["ef_search"] = ef_search or HNSW_EF_SEARCH
        return faiss.IndexIDMap2(hnsw), params
    index = faiss.index_factory(plan.dim, plan.factory.removeprefix("IDMap2,"), faiss.METRIC_INNER_PRODUCT)
    if plan.kind == "ivfpq":
        params["rescore_factor"] = RESCORE_FACTOR
    ivf = faiss.extract_index_ivf(index)
    assigner = None
    if plan.nlist >= HNSW_TRAINING_FROM:  # see HNSW_TRAINING_FROM
        assigner = faiss.IndexHNSWFlat(plan.dim, HNSW_QUANTIZER_M, faiss.METRIC_L2)
        ivf.clustering_index = assigner
    index.train(sample)
    if assigner is not None:
        ivf.clustering_index = None
    params["nprobe"] = max(1, min(plan.nlist, nprobe or IVF_NPROBE))
    return index, params


def add_chunks(index: faiss.Index, chunks: VectorChunks, truth: TopK | None) -> int:
    """Add every chunk to `index` (and to the exact top k `truth`, when the guard will run); returns how many."""
    added = 0
    for chunk_ids, chunk in chunks():
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        chunk_ids = np.ascontiguousarray(chunk_ids, dtype=np.int64)
        if len(chunk_ids):
            index.add_with_ids(chunk, chunk_ids)
            if truth is not None:
                truth.update(chunk, chunk_ids)
            added += len(chunk_ids)
    return added
