"""Each model's FAISS index as a library keeps it: in memory while it matches SQLite, else read from its file, else
rebuilt from SQLite; saved atomically beside a .json that says which generation of the vectors it holds; brought up
to date in place after a run. SQLite is the truth: any file here can be deleted and is rebuilt."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vlsearch.library.embeddings import StoredVectors
from vlsearch.library.errors import LibraryBusy
from vlsearch.library.schema import ModelRecord
from vlsearch.library.vectors import FLAT_LIMIT, VectorIndex

if TYPE_CHECKING:
    from vlsearch.library.store import Library

log = logging.getLogger(__name__)

VECTOR_DIR = "vectors"


class IndexCache:
    """The FAISS indexes of one library's models, for one process."""

    def __init__(self, library: Library) -> None:
        self.library = library
        # model -> (generation it matches, index, monotonic time it was last known to match)
        self._indexes: dict[str, tuple[int, VectorIndex, float]] = {}
        self._lock = threading.Lock()  # one thread loads or rebuilds a stale index; the others wait for it

    def path(self, model: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
        return self.library.root / VECTOR_DIR / f"{slug}.faiss"

    def current(self, model: str, max_stale_s: float = 0.0) -> VectorIndex:
        """See Library.vector_index."""
        rec = self.library.require_model(model)
        cached = self._indexes.get(model)
        if cached and (cached[0] == rec.generation or time.monotonic() - cached[2] < max_stale_s):
            return cached[1]
        with self._lock:
            cached = self._indexes.get(model)  # another thread may have refreshed it while this one waited
            if cached and cached[0] == rec.generation:
                return cached[1]
            return self._load_or_rebuild(model, rec)

    def _load_or_rebuild(self, model: str, rec: ModelRecord) -> VectorIndex:
        path = self.path(model)
        stored = StoredVectors(self.library.engine, model, rec.dim)
        count = stored.count()
        index = None
        requested, options = "auto", {}
        if path.exists():
            try:
                loaded, meta = VectorIndex.load(path, rec.dim, rescore_from=stored.lookup())
                # a stale ivfpq or hnsw index is rebuilt as one, within the memory budget it was built for
                requested, options = loaded.requested, loaded.build_options
                if meta.generation == rec.generation and meta.count == count and meta.model == model:
                    index = loaded
                else:
                    log.warning("%s is stale (generation %s, library at %s); rebuilding it",
                                path, meta.generation, rec.generation)
            except Exception as exc:  # a corrupt or truncated cache file is rebuilt, never fatal
                log.warning("cannot read %s (%s); rebuilding it from SQLite", path, exc)
        elif count:
            log.warning("%s is missing; rebuilding it from SQLite", path)
        if index is None:
            return self.rebuild(model, requested, **options)
        if index.kind != "flat" and not index.recall:
            # Saved before the recall guard existed, with fixed settings that miss text queries: tune it now
            # (no retraining: the guard only searches), once, and keep what it chose.
            log.warning("%s was built without a recall check; checking it now", path)
            index.check_recall(*stored.load())
            self._save_checked(model, index, rec.generation)
        self._place(index)
        self._indexes[model] = (rec.generation, index, time.monotonic())
        return index

    def rebuild(self, model: str, kind: str = "auto", *, memory_budget: int | None = None,
                latency_target_ms: float | None = None, opq: bool = False, quantizer: str = "flat") -> VectorIndex:
        """See Library.rebuild_index."""
        rec = self.library.require_model(model)
        stored = StoredVectors(self.library.engine, model, rec.dim)
        index = VectorIndex.build_from_chunks(stored.chunks(), stored.count(), rec.dim, kind,
                                              rescore_from=stored.lookup(), memory_budget=memory_budget,
                                              latency_target_ms=latency_target_ms, opq=opq, quantizer=quantizer)
        self._place(index)
        self.save(model, index, rec.generation)
        return index

    def apply(self, model: str, index: VectorIndex, upserts: list[int], removed: list[int]) -> None:
        """See Library.apply_to_index."""
        rec = self.library.require_model(model)
        options = index.build_options
        if not index.can_remove and (removed or upserts):
            self.rebuild(model, index.requested, **options)
            return
        if index.kind == "flat" and index.requested == "auto" and index.ntotal + len(upserts) >= FLAT_LIMIT:
            self.rebuild(model, "auto", **options)  # grown past exact search: switch to the approximate index
            return
        index = index.in_memory()
        index.remove(np.asarray(sorted(set(upserts) | set(removed)), dtype=np.int64))
        stored = StoredVectors(self.library.engine, model, rec.dim)
        index.add(*stored.load(sorted(set(upserts))))
        if index.ntotal != stored.count():
            log.warning("index of %s disagrees with SQLite after update; rebuilding it", model)
            self.rebuild(model, index.requested, **options)
            return
        self.save(model, index, rec.generation)

    def forget(self, model: str) -> None:
        """Let go of `model`'s index in memory (its file stays): the next use reads it again."""
        self._indexes.pop(model, None)

    def save(self, model: str, index: VectorIndex, generation: int) -> None:
        index.save(self.path(model), index.meta(model, generation))
        self._indexes[model] = (generation, index, time.monotonic())

    def _save_checked(self, model: str, index: VectorIndex, generation: int) -> None:
        """Keep a recall check's settings on disk, if no writer is busy and the library is still at `generation`
        (a reader must not write an old index over a writer's new one). Otherwise the index is used from memory
        and checked again the next time a process loads the file."""
        try:
            with self.library.writer("a recall check"):
                if self.library.require_model(model).generation != generation:
                    return
                index.save(self.path(model), index.meta(model, generation))
        except (LibraryBusy, OSError) as exc:
            log.info("the recall check of %s's index is not saved (%s); using it from memory", model, exc)

    def _place(self, index: VectorIndex) -> None:
        if index.use_gpu(self.library.faiss_gpu):
            log.info("searching the %s index of %d vectors on the GPU (%s)", index.kind, index.ntotal,
                     index.gpu_search)
