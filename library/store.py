"""A library is a directory: library.db (SQLite, WAL), one FAISS file per model, thumbs/."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import URL, Engine, bindparam, create_engine, delete, event, func, select, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from vlsearch.library import migrate
from vlsearch.library.schema import Caption, Embedding, ImageRecord, ModelRecord, OcrText
from vlsearch.library.vectors import CHUNK_VECTORS, FLAT_LIMIT, VectorChunks, VectorIndex, VectorLookup

log = logging.getLogger(__name__)

DB_NAME = "library.db"
VECTOR_DIR = "vectors"
WRITER_LOCK = "writer.lock"


class LibraryError(Exception):
    """A library cannot do what was asked; the message says what to change."""


class ModelMismatchError(LibraryError):
    """The library holds no vectors from the model a query was encoded with."""


class LibraryBusy(LibraryError):
    """Another indexing run (in this process or another) is writing to the library."""


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


def encode_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float16).tobytes()


def decode_vectors(blobs: list[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.empty((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), dim).astype(np.float32)


_VECTORS_BY_ID = select(Embedding.image_id, Embedding.vector).where(
    Embedding.model == bindparam("model"), Embedding.image_id.in_(bindparam("ids", expanding=True))
)


# Writer-lock file descriptors this process holds. A process forked while holding one (the indexer's decoding
# workers) closes its copy: otherwise the flock lives on in the child, and after `kill -9` of the indexer its
# orphaned workers kept the library locked ("already writing") until they noticed and exited. Closing the copy
# leaves the lock with the parent (flock releases only on LOCK_UN or when the last descriptor closes).
_HELD_WRITER_FDS: set[int] = set()


def _close_inherited_writer_locks() -> None:
    for fd in list(_HELD_WRITER_FDS):
        with suppress(OSError):
            os.close(fd)
    _HELD_WRITER_FDS.clear()


os.register_at_fork(after_in_child=_close_inherited_writer_locks)


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
        # model -> (generation it matches, index, monotonic time it was last known to match)
        self._indexes: dict[str, tuple[int, VectorIndex, float]] = {}
        self._index_lock = threading.Lock()  # one thread loads or rebuilds a stale index; the others wait for it

    @classmethod
    def open(cls, root: Path | str, create: bool = True, faiss_gpu: bool = False) -> Library:
        """Open (or create) the library at `root`, applying any pending schema migration."""
        root = Path(root).expanduser().resolve()
        db = root / DB_NAME
        if root.exists() and not root.is_dir():
            raise LibraryError(f"{root} is a file; a library is a folder: pass --library DIR")
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
        """Hold the library's writer lock (an flock on writer.lock, released by the OS if the holder dies): one
        indexing run at a time, whichever process starts it. Raises LibraryBusy at once if another holds it."""
        path = self.root / WRITER_LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                raise LibraryBusy(f"{holder} is already writing to the library {self.root}; wait for it to finish "
                                  "(or stop it) and try again") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{who} (pid {os.getpid()})".encode(), 0)
            _HELD_WRITER_FDS.add(fd)
            try:
                yield
            finally:
                _HELD_WRITER_FDS.discard(fd)
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    # -- models -----------------------------------------------------------------------------------

    def models(self) -> list[ModelRecord]:
        with self.session() as s:
            return list(s.scalars(select(ModelRecord).order_by(ModelRecord.created_at)))

    def default_model(self) -> str | None:
        """The model whose vectors most images have: what a query uses when none is named."""
        with self.session() as s:
            row = s.execute(
                select(Embedding.model, func.count())
                .group_by(Embedding.model)
                .order_by(func.count().desc())
                .limit(1)
            ).first()
            if row:
                return row[0]
            first = s.scalars(select(ModelRecord.name).order_by(ModelRecord.created_at)).first()
            return first

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
        """The record of a model this library has vectors for, or an error naming the ones it has."""
        with self.session() as s:
            rec = s.get(ModelRecord, name)
            if rec is not None:
                return rec
            have = [m.name for m in s.scalars(select(ModelRecord))]
        if not have:
            raise ModelMismatchError(f"library {self.root} holds no vectors yet; run `vlsearch index` first")
        raise ModelMismatchError(
            f"library {self.root} has vectors from {', '.join(map(repr, have))}, not from {name!r}. "
            f"Search with --model {have[0]}, or run `vlsearch index --model {name}` to add vectors for it."
        )

    @staticmethod
    def bump_generation(session: Session, model: str) -> None:
        """Call inside every transaction that changes `model`'s vectors."""
        session.execute(
            update(ModelRecord).where(ModelRecord.name == model).values(generation=ModelRecord.generation + 1)
        )

    # -- vectors ----------------------------------------------------------------------------------

    def index_path(self, model: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
        return self.root / VECTOR_DIR / f"{slug}.faiss"

    def load_vectors(self, model: str, ids: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 vectors) of `model` from SQLite, for all images or for the given ids."""
        rec = self.require_model(model)
        out_ids: list[int] = []
        blobs: list[bytes] = []
        with self.session() as s:
            query = select(Embedding.image_id, Embedding.vector).where(Embedding.model == model)
            if ids is None:
                chunks: list[list[int] | None] = [None]
            else:
                chunks = [ids[i : i + 30_000] for i in range(0, len(ids), 30_000)]
            for chunk in chunks:
                q = query if chunk is None else query.where(Embedding.image_id.in_(chunk))
                for image_id, blob in s.execute(q.order_by(Embedding.image_id)):
                    out_ids.append(image_id)
                    blobs.append(blob)
        return np.asarray(out_ids, dtype=np.int64), decode_vectors(blobs, rec.dim)

    def vector_chunks(self, model: str, chunk: int = CHUNK_VECTORS) -> VectorChunks:
        """Passes over `model`'s (ids, float32 vectors) in image id order, `chunk` rows at a time: what an index of
        a library too large to load at once is built from. Each pass reads SQLite afresh."""
        dim = self.require_model(model).dim
        query = select(Embedding.image_id, Embedding.vector).where(Embedding.model == model)

        def passes() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            last = None
            while True:
                with self.engine.connect() as conn:
                    page = query if last is None else query.where(Embedding.image_id > last)
                    rows = conn.execute(page.order_by(Embedding.image_id).limit(chunk)).all()
                if not rows:
                    return
                last = rows[-1][0]
                yield np.asarray([r[0] for r in rows], dtype=np.int64), decode_vectors([r[1] for r in rows], dim)
                if len(rows) < chunk:
                    return

        return passes

    def vector_index(self, model: str, max_stale_s: float = 0.0) -> VectorIndex:
        """The FAISS index of `model`, current with SQLite: from memory, from its file, or rebuilt.

        `max_stale_s` lets a long-running reader (the server) keep an index that was current that many seconds
        ago while an indexer writes batch after batch, instead of rebuilding it on every query. Its hits are
        hydrated from SQLite, so a vector removed meanwhile is never returned; a new one shows up a little late.
        """
        rec = self.require_model(model)
        cached = self._indexes.get(model)
        if cached and (cached[0] == rec.generation or time.monotonic() - cached[2] < max_stale_s):
            return cached[1]
        with self._index_lock:
            cached = self._indexes.get(model)  # another thread may have refreshed it while this one waited
            if cached and cached[0] == rec.generation:
                return cached[1]
            return self._load_or_rebuild(model, rec)

    def _load_or_rebuild(self, model: str, rec: ModelRecord) -> VectorIndex:
        path = self.index_path(model)
        count = self.vector_count(model)
        index = None
        requested, options = "auto", {}
        if path.exists():
            try:
                loaded, meta = VectorIndex.load(path, rec.dim, rescore_from=self.stored_vectors(model))
                # a stale ivfpq or hnsw index is rebuilt as one, within the memory budget it was built for
                requested, options = loaded.requested, loaded.build_options
                if meta.generation == rec.generation and meta.count == count and meta.model == model:
                    index = loaded
                else:
                    log.warning("%s is stale (generation %s, library at %s); rebuilding it",
                                path, meta.generation, rec.generation)
            except Exception as exc:  # a corrupt or truncated cache file is rebuilt, never fatal
                log.warning("cannot read %s (%s); rebuilding it from %s", path, exc, DB_NAME)
        elif count:
            log.warning("%s is missing; rebuilding it from %s", path, DB_NAME)
        if index is None:
            index = self.rebuild_index(model, requested, **options)
        else:
            if index.kind != "flat" and not index.recall:
                # Saved before the recall guard existed, with fixed settings that miss text queries: tune it now
                # (no retraining: the guard only searches), once, and keep what it chose.
                log.warning("%s was built without a recall check; checking it now", path)
                ids, vectors = self.load_vectors(model)
                index.check_recall(ids, vectors)
                del vectors
                self._save_checked(model, index, rec.generation)
            self._place(index)
            self._indexes[model] = (rec.generation, index, time.monotonic())
        return index

    def rebuild_index(self, model: str, kind: str = "auto", *, memory_budget: int | None = None,
                      latency_target_ms: float | None = None, opq: bool = False,
                      quantizer: str = "flat") -> VectorIndex:
        """Build `model`'s FAISS index from SQLite, a chunk of vectors at a time, and save it. `memory_budget`
        (bytes) lets the builder pick the index that fits (library/vectors.py plan_index); `latency_target_ms`
        caps the search setting the recall guard may choose; `quantizer` is an IVF index's coarse quantizer."""
        rec = self.require_model(model)
        index = VectorIndex.build_from_chunks(self.vector_chunks(model), self.vector_count(model), rec.dim, kind,
                                              rescore_from=self.stored_vectors(model), memory_budget=memory_budget,
                                              latency_target_ms=latency_target_ms, opq=opq, quantizer=quantizer)
        self._place(index)
        self.save_index(model, index, rec.generation)
        return index

    def _save_checked(self, model: str, index: VectorIndex, generation: int) -> None:
        """Keep a recall check's settings on disk, if no writer is busy and the library is still at `generation`
        (a reader must not write an old index over a writer's new one). Otherwise the index is used from memory
        and checked again the next time a process loads the file."""
        try:
            with self.writer("a recall check"):
                if self.require_model(model).generation != generation:
                    return
                index.save(self.index_path(model), index.meta(model, generation))
        except (LibraryBusy, OSError) as exc:
            log.info("the recall check of %s's index is not saved (%s); using it from memory", model, exc)

    def stored_vectors(self, model: str) -> VectorLookup:
        """Image ids -> (the ids that have `model` vectors, the vectors), read from SQLite: what an IVF-PQ index
        rescores its candidates with, on every query. Through a plain connection rather than a session: ~0.7 ms
        for 100 vectors instead of ~1.8."""
        dim = self.require_model(model).dim

        def lookup(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rows = []
            with self.engine.connect() as conn:
                for start in range(0, len(ids), 30_000):
                    chunk = [int(i) for i in ids[start : start + 30_000]]
                    rows += conn.execute(_VECTORS_BY_ID, {"model": model, "ids": chunk}).all()
            return np.asarray([r[0] for r in rows], dtype=np.int64), decode_vectors([r[1] for r in rows], dim)

        return lookup

    def _place(self, index: VectorIndex) -> None:
        if index.use_gpu(self.faiss_gpu):
            log.info("searching the %s index of %d vectors on the GPU", index.kind, index.ntotal)

    def apply_to_index(self, model: str, index: VectorIndex, upserts: list[int], removed: list[int]) -> None:
        """Bring an index that was current before a run up to date with that run's changes, and save it. A
        memory-mapped index (a large one, mapped read-only when loaded) is read into memory for the update first."""
        rec = self.require_model(model)
        options = index.build_options
        if not index.can_remove and (removed or upserts):
            self.rebuild_index(model, index.requested, **options)
            return
        if index.kind == "flat" and index.requested == "auto" and index.ntotal + len(upserts) >= FLAT_LIMIT:
            self.rebuild_index(model, "auto", **options)  # grown past exact search: switch to the approximate index
            return
        index = index.in_memory()
        index.remove(np.asarray(sorted(set(upserts) | set(removed)), dtype=np.int64))
        ids, vectors = self.load_vectors(model, sorted(set(upserts)))
        index.add(ids, vectors)
        if index.ntotal != self.vector_count(model):
            log.warning("index of %s disagrees with %s after update; rebuilding it", model, DB_NAME)
            self.rebuild_index(model, index.requested, **options)
            return
        self.save_index(model, index, rec.generation)

    def save_index(self, model: str, index: VectorIndex, generation: int) -> None:
        index.save(self.index_path(model), index.meta(model, generation))
        self._indexes[model] = (generation, index, time.monotonic())

    def delete_images(self, ids: list[int]) -> tuple[list[int], dict[str, list[int]]]:
        """Forget images (rows, vectors, captions, OCR text; thumbnails stay, shared by content hash). Returns the
        ids this call deleted (not those already gone, perhaps by a concurrent delete) and model -> the deleted
        ids that had its vectors, for updating FAISS; the generations are bumped."""
        removed: dict[str, list[int]] = {}
        deleted: list[int] = []
        with self.session() as s:
            for start in range(0, len(ids), 10_000):
                chunk = ids[start : start + 10_000]
                for image_id, model in s.execute(
                    select(Embedding.image_id, Embedding.model).where(Embedding.image_id.in_(chunk))
                ):
                    removed.setdefault(model, []).append(image_id)
                deleted += s.scalars(delete(ImageRecord).where(ImageRecord.id.in_(chunk)).returning(ImageRecord.id))
            for model in removed:
                self.bump_generation(s, model)
        return deleted, removed

    def vector_count(self, model: str) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Embedding).where(Embedding.model == model)) or 0

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
