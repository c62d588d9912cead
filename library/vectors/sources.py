"""Where an index's vectors come from: passes over chunks (a library's vectors need not fit in RAM as float32) and
look-ups of exact vectors by id (what IVF-PQ rescores with)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

CHUNK_VECTORS = 100_000  # what the chunked builder adds at a time (200 MB of float32 at dimension 512)

# image ids -> (the ids among them that have a stored vector, those vectors as float32 rows), in any order
VectorLookup = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
# a fresh pass over (ids, float32 vectors) chunks, the same ones in the same order on every call
VectorChunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def array_lookup(ids: np.ndarray, vectors: np.ndarray) -> VectorLookup:
    """A VectorLookup over vectors in memory."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = np.asarray(ids, dtype=np.int64)[order]

    def lookup(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.clip(np.searchsorted(sorted_ids, wanted), 0, max(len(sorted_ids) - 1, 0))
        keep = (sorted_ids[at] == wanted) if len(sorted_ids) else np.zeros(len(wanted), dtype=bool)
        return np.asarray(wanted, dtype=np.int64)[keep], vectors[order[at[keep]]]

    return lookup


def rows_at(chunks: VectorChunks, positions: list[np.ndarray | None]) -> list[np.ndarray | None]:
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
