"""A library is a directory: library.db (SQLite, WAL: rows and vectors, the truth), vectors/ (a FAISS index per
model, derived), thumbs/, and writer.lock. Library is its one handle."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import URL, Engine, create_engine, delete, event, func, select, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from vlsearch.library import migrate
from vlsearch.library.embeddings import StoredVectors
from vlsearch.library.errors import LibraryError, ModelMismatchError, NotAFolder
from vlsearch.library.index_cache import IndexCache
from vlsearch.library.lock import writer_lock
from vlsearch.library.schema import Caption, Embedding, ImageRecord, ModelRecord, OcrText
from vlsearch.library.spaces import is_companion
from vlsearch.library.sql import in_chunks
from vlsearch.library.vectors import VectorIndex

log = logging.getLogger(__name__)

DB_NAME = "library.db"


@dataclass(frozen=True)
class ModelStats:
    name: str
    dim: int
    vectors: int


@dataclass(frozen=True)
class LibraryStats:
    root: Path
    images: int
    errors: int
    models: list[ModelStats]
    disk_bytes: int
    schema_revision: str | None
    captions: dict[str, int]  # caption model -> images it captioned
    ocr: int  # images OCR has read (with or without text found)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Library:
    """Rows and vectors of one image collection. SQLite is the truth; FAISS files are rebuilt from it."""

    def __init__(self, root: Path, engine: Engine, faiss_gpu: bool = False) -> None:
        """`faiss_gpu`: search FAISS indexes on a GPU when there is one and the index kind runs there. Off by
        default: copying an index to the GPU pays only in a long-lived process (the server), not in one CLI query
        or an indexing run."""
        self.root = root
        self.engine = engine
        self.faiss_gpu = faiss_gpu
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.indexes = IndexCache(self)

    @classmethod
    def open(cls, root: Path | str, create: bool = True, faiss_gpu: bool = False) -> Library:
        """Open (or create) the library at `root`, applying any pending schema migration."""
        root = Path(root).expanduser().resolve()
        db = root / DB_NAME
        if root.exists() and not root.is_dir():
            raise NotAFolder(root)
        if not db.exists():
            if not create:
                raise LibraryError(f"no library at {root} (no {DB_NAME}); index a folder into it first")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LibraryError(f"cannot create the library folder {root}: {exc.strerror or exc}") from None
        # URL.create, not a URL string: a folder name with ?, % or # must stay part of the file path.
        engine = create_engine(URL.create("sqlite", database=str(db)))
        event.listen(engine, "connect", _sqlite_pragmas)
        try:
            before, after = migrate.upgrade(engine)
        except OperationalError as exc:
            engine.dispose()
            raise LibraryError(f"cannot open {db}: {exc.orig}") from None
        except DatabaseError as exc:
            engine.dispose()
            raise LibraryError(f"{db} is not a readable vlsearch library ({exc.orig}); is it the right folder?") \
                from None
        if before != after:
            log.info("library %s: schema migrated from %s to %s", root, before or "empty", after)
        return cls(root, engine, faiss_gpu)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def writer(self, who: str = "an index run") -> Iterator[None]:
        """Hold the library's writer lock: one indexing run at a time, whichever process starts it. Raises
        LibraryBusy at once, naming the holder, if another holds it."""
        with writer_lock(self.root, who):
            yield

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    # -- models -----------------------------------------------------------------------------------

    def models(self) -> list[ModelRecord]:
        """The models a query can use, not their companion spaces (library/spaces.py)."""
        with self.session() as s:
            return [m for m in s.scalars(select(ModelRecord).order_by(ModelRecord.created_at))
                    if not is_companion(m.name)]

    def default_model(self) -> str | None:
        """The model whose vectors most images have: what a query uses when none is named."""
        with self.session() as s:
            rows = s.execute(select(Embedding.model, func.count()).group_by(Embedding.model)
                             .order_by(func.count().desc(), Embedding.model)).all()
            names = [name for name, _ in rows] or s.scalars(select(ModelRecord.name)
                                                            .order_by(ModelRecord.created_at)).all()
            return next((name for name in names if not is_companion(name)), None)

    def caption_model(self) -> str | None:
        """The caption model most of this library's captions come from, a real one before the offline fallback:
        what later runs use by default."""
        with self.session() as s:
            return s.scalar(
                select(Caption.model).group_by(Caption.model)
                .order_by((Caption.model == "offline").asc(), func.count().desc()).limit(1)
            )

    def ensure_model(self, name: str, dim: int) -> None:
        with self.session() as s:
            rec = s.get(ModelRecord, name)
            if rec is None:
                s.add(ModelRecord(name=name, dim=dim, generation=0))
            elif rec.dim != dim:
                raise LibraryError(
                    f"model {name!r} is recorded in {self.root} with dimension {rec.dim}, "
                    f"but the loaded weights give {dim}; use the weights the library was indexed with"
                )

    def require_model(self, name: str) -> ModelRecord:
        """The record of a model this library has vectors for, or ModelMismatchError naming the ones it has."""
        with self.session() as s:
            rec = s.get(ModelRecord, name)
            if rec is not None:
                return rec
            have = [m.name for m in s.scalars(select(ModelRecord)) if not is_companion(m.name)]
        raise ModelMismatchError(self.root, name, have)

    @staticmethod
    def bump_generation(session: Session, model: str) -> None:
        """Call inside every transaction that changes `model`'s vectors."""
        session.execute(
            update(ModelRecord).where(ModelRecord.name == model).values(generation=ModelRecord.generation + 1)
        )

    # -- vectors: stored in SQLite (embeddings.py), indexed by FAISS (index_cache.py) ---------------------------

    def stored_vectors(self, model: str) -> StoredVectors:
        return StoredVectors(self.engine, model, self.require_model(model).dim)

    def load_vectors(self, model: str, ids: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 vectors) of `model` from SQLite, for all images or for the given ids."""
        return self.stored_vectors(model).load(ids)

    def vector_count(self, model: str) -> int:
        return self.stored_vectors(model).count()

    def index_path(self, model: str) -> Path:
        return self.indexes.path(model)

    def vector_index(self, model: str, max_stale_s: float = 0.0) -> VectorIndex:
        """The FAISS index of `model`, current with SQLite: from memory, from its file, or rebuilt.

        `max_stale_s` lets a long-running reader (the server) keep an index that was current that many seconds
        ago while an indexer writes batch after batch, instead of rebuilding it on every query. Its hits are
        hydrated from SQLite, so a vector removed meanwhile is never returned; a new one shows up a little late.
        """
        return self.indexes.current(model, max_stale_s)

    def rebuild_index(self, model: str, kind: str = "auto", *, memory_budget: int | None = None,
                      latency_target_ms: float | None = None, opq: bool = False,
                      quantizer: str = "flat") -> VectorIndex:
        """Build `model`'s FAISS index from SQLite, a chunk of vectors at a time, and save it. `memory_budget`
        (bytes) lets the builder pick the index that fits (library/vectors/plan.py); `latency_target_ms` caps the
        search setting the recall guard may choose; `quantizer` is an IVF index's coarse quantizer."""
        return self.indexes.rebuild(model, kind, memory_budget=memory_budget, latency_target_ms=latency_target_ms,
                                    opq=opq, quantizer=quantizer)

    def apply_to_index(self, model: str, index: VectorIndex, upserts: list[int], removed: list[int]) -> None:
        """Bring an index that was current before a run up to date with that run's changes, and save it. A
        memory-mapped index (a large one, mapped read-only when loaded) is read into memory for the update first."""
        self.indexes.apply(model, index, upserts, removed)

    def save_index(self, model: str, index: VectorIndex, generation: int) -> None:
        self.indexes.save(model, index, generation)

    def delete_images(self, ids: list[int]) -> tuple[list[int], dict[str, list[int]]]:
        """Forget images (rows, vectors, captions, OCR text; thumbnails stay, shared by content hash). Returns the
        ids this call deleted (not those already gone, perhaps by a concurrent delete) and model -> the deleted
        ids that had its vectors, for updating FAISS; the generations are bumped."""
        removed: dict[str, list[int]] = {}
        deleted: list[int] = []
        with self.session() as s:
            for chunk in in_chunks(ids):
                for image_id, model in s.execute(
                    select(Embedding.image_id, Embedding.model).where(Embedding.image_id.in_(chunk))
                ):
                    removed.setdefault(model, []).append(image_id)
                deleted += s.scalars(delete(ImageRecord).where(ImageRecord.id.in_(chunk)).returning(ImageRecord.id))
            for model in removed:
                self.bump_generation(s, model)
        return deleted, removed

    def forget_images(self, ids: list[int]) -> list[int]:
        """delete_images, then each model's FAISS index (as current before the rows went) brought in step and
        saved: what forgetting images from the API or `vlsearch duplicates` does. The caller holds the writer
        lock. Returns the ids this call deleted."""
        with self.session() as s:
            models = {m for chunk in in_chunks(ids)
                      for m in s.scalars(select(Embedding.model).where(Embedding.image_id.in_(chunk)).distinct())}
        before = {model: self.vector_index(model) for model in sorted(models)}
        deleted, removed = self.delete_images(ids)
        for model, gone in removed.items():
            self.apply_to_index(model, before[model], [], gone)
        return deleted

    # -- overview ---------------------------------------------------------------------------------

    def _disk_bytes(self) -> int:
        """Bytes under the library folder. Another process may be writing (temp files come and go mid-walk):
        a file that vanishes between listing and stat is simply not counted."""
        total = 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    continue
        return total

    def stats(self) -> LibraryStats:
        with self.session() as s:
            images = s.scalar(select(func.count()).where(ImageRecord.status == "ok")) or 0
            errors = s.scalar(select(func.count()).where(ImageRecord.status == "error")) or 0
            counts = dict(s.execute(select(Embedding.model, func.count()).group_by(Embedding.model)).all())
            models = [
                ModelStats(m.name, m.dim, counts.get(m.name, 0))
                for m in s.scalars(select(ModelRecord).order_by(ModelRecord.created_at))
            ]
            captions = dict(s.execute(select(Caption.model, func.count()).group_by(Caption.model)).all())
            ocr = s.scalar(select(func.count()).select_from(OcrText)) or 0
        return LibraryStats(self.root, images, errors, models, self._disk_bytes(),
                            migrate.current_revision(self.engine), captions, ocr)
