"""discover -> plan -> decode (worker processes) -> embed (batched) -> write (one transaction per batch).

Each batch commits its rows and vectors together, so a run killed at any point keeps what it finished and
the next run resumes from there; the FAISS index is brought up to date at the end (or rebuilt on open).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from sqlalchemy import delete, func, select
from torch.utils.data import DataLoader, Dataset

from vlsearch.encoders import Encoder
from vlsearch.images import DEFAULT_MAX_PIXELS, DecodeError, ImageMeta, decode_bytes, limit_aspect, read_image_file
from vlsearch.indexer.discover import discover
from vlsearch.library import Embedding, ImageRecord, Library, Root
from vlsearch.library.schema import Caption, OcrText, utcnow
from vlsearch.library.store import VECTOR_DIR, encode_vector
from vlsearch.library.thumbs import THUMB_DIR, THUMB_LONG_SIDE, write_thumbnail

log = logging.getLogger(__name__)


class ProgressHook(Protocol):
    """What the CLI's progress bar offers the indexer (which never prints)."""

    def start(self, total: int) -> None: ...

    def advance(self, n: int, errors: int = 0) -> None:
        """`n` more items done, `errors` of them failed."""


@dataclass
class IndexReport:
    """What one run did, for the summary line and for tests."""

    seen: int = 0
    unchanged: int = 0
    embedded: int = 0
    reused: int = 0
    moved: int = 0
    errors: int = 0
    removed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        done = self.embedded + self.reused + self.moved + self.errors
        return done / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class WorkItem:
    path: str
    size: int
    mtime: float
    image_id: int | None  # the row this file already has, if any


@dataclass
class Decoded:
    item: WorkItem
    sha256: str | None = None
    meta: ImageMeta | None = None
    thumbnail: str | None = None
    error: str | None = None
    slot: int | None = None  # row in the batch tensor


@dataclass
class Batch:
    records: list[Decoded]
    pixels: torch.Tensor | None

    def pin_memory(self) -> Batch:
        """Called by the DataLoader on GPU runs, so the copy to the device overlaps with compute."""
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


class DecodeDataset(Dataset):
    """Reads, hashes, decodes, thumbnails and preprocesses one file; runs inside DataLoader workers."""

    def __init__(self, items: list[WorkItem], preprocess, library_root: Path, max_pixels: int,
                 confine_to: list[Path] | None = None, draft: int | None = None) -> None:
        self.items = items
        self.draft = draft
        self.preprocess = preprocess
        self.library_root = library_root
        self.max_pixels = max_pixels
        self.confine_to = confine_to

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Decoded, torch.Tensor | None]:
        item = self.items[i]
        try:
            data = read_image_file(item.path, self.confine_to)
        except OSError as exc:
            return Decoded(item, error=f"cannot read file: {exc.strerror or exc}"), None
        except DecodeError as exc:
            return Decoded(item, error=str(exc)), None
        sha = hashlib.sha256(data).hexdigest()
        try:
            image, meta = decode_bytes(data, self.max_pixels, self.draft)
            thumb = write_thumbnail(image, self.library_root, sha)
            pixels = self.preprocess(limit_aspect(image))
        except DecodeError as exc:
            return Decoded(item, sha256=sha, error=str(exc)), None
        except Exception as exc:  # a decoder bug on one file must not end the run
            return Decoded(item, sha256=sha, error=f"decoding failed: {type(exc).__name__}: {exc}"), None
        return Decoded(item, sha256=sha, meta=meta, thumbnail=thumb), pixels


def collate(samples: list[tuple[Decoded, torch.Tensor | None]]) -> Batch:
    tensors = []
    for record, pixels in samples:
        if pixels is not None:
            record.slot = len(tensors)
            tensors.append(pixels)
    return Batch([r for r, _ in samples], torch.stack(tensors) if tensors else None)


def decode_workers(workers: int | None = None, device: str = "cpu", cores: int | None = None) -> int:
    """Decoding processes: as asked, else by where the model runs. On the CPU the model needs the cores too, so
    one worker per core up to 4; on a GPU the CPU does nothing but decode, and decoding is the limit, so every
    core but one (the main process feeds the GPU and writes to SQLite)."""
    if workers is not None:
        return workers
    cores = cores or os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(1, cores - 1)
    return min(4, cores)


# A JPEG is decoded at reduced scale down to this many times the largest size the indexer needs (the model's input
# short side, the thumbnail's long side): the margin keeps the final resize a real low-pass filter, so the vectors
# match those of a full-size decode (cosine >= 0.995 on average; tests/test_fast_path.py, bench indexing).
DRAFT_MARGIN = 2


def draft_size(encoder: Encoder) -> int:
    """The short side, in pixels, a JPEG may be decoded down to for this encoder and the thumbnail."""
    return DRAFT_MARGIN * max(encoder.input_size, THUMB_LONG_SIDE)


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding workers share the cores with the model; one thread each


class Indexer:
    """Indexes folders and files into a library with one encoder, incrementally and resumably."""

    def __init__(
        self,
        library: Library,
        encoder: Encoder,
        *,
        batch_size: int = 32,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        prune: bool = True,
        progress: ProgressHook | None = None,
        mp_context: str | None = None,
        confine_to: Iterable[Path] | None = None,
        reduced_decode: bool = True,
    ) -> None:
        """`confine_to`: skip symlinked files whose targets lie outside these folders (the server's index_roots).
        `reduced_decode`: decode large JPEGs at a reduced scale (see `draft_size`); off only to measure it."""
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.library = library
        self.encoder = encoder
        self.batch_size = batch_size
        self.workers = decode_workers(workers, encoder.device)
        self.max_pixels = max_pixels
        self.prune = prune
        self.progress = progress
        # "forkserver" where the caller runs threads (the server): forking a threaded process can deadlock.
        self.mp_context = mp_context
        self.confine_to = None if confine_to is None else [Path(os.path.realpath(p)) for p in confine_to]
        self.model = encoder.name
        self.draft = draft_size(encoder) if reduced_decode else None

    def run(self, paths: Iterable[Path | str]) -> IndexReport:
        started = time.perf_counter()
        report = IndexReport()
        roots = [Path(p).expanduser().resolve() for p in paths]
        for root in roots:
            try:
                str(root).encode("utf-8")
            except UnicodeEncodeError:
                shown = os.fsencode(root).decode("utf-8", "backslashreplace")
                raise ValueError(f"{shown}: the name is not valid UTF-8; rename it to index it") from None
        self.library.ensure_model(self.model, self.encoder.dim)
        index = self.library.vector_index(self.model)  # current before we start: deltas apply to it
        unusable: list[tuple[str, str]] = []
        library_dirs = [self.library.root / THUMB_DIR, self.library.root / VECTOR_DIR]
        files = {str(p): p for p in discover(roots, exclude=library_dirs, unusable=unusable,
                                                 confine_to=self.confine_to)}
        report.seen = len(files) + len(unusable)
        report.errors += len(unusable)
        report.failures.extend(unusable)
        folders = [r for r in roots if r.is_dir()]
        self._remember_roots(folders)
        work = self._plan(files, roots, report)
        upserts: list[int] = []
        if self.progress:
            self.progress.start(len(work))
        if work:
            loader = DataLoader(
                DecodeDataset(work, self.encoder.preprocess, self.library.root, self.max_pixels,
                              self.confine_to, draft=self.draft),
                batch_size=self.batch_size,
                num_workers=self.workers,
                collate_fn=collate,
                worker_init_fn=_worker_init if self.workers else None,
                multiprocessing_context=self.mp_context if self.workers else None,
                prefetch_factor=4 if self.workers else None,
                pin_memory=self.encoder.device.startswith("cuda"),
                persistent_workers=False,
            )
            try:
                for batch in loader:
                    errors_before = report.errors
                    self._write_batch(batch, report, upserts)
                    if self.progress:
                        self.progress.advance(len(batch.records), report.errors - errors_before)
            except KeyboardInterrupt:
                # Committed batches stay; bring FAISS up to date with them so a search right away sees them.
                self.library.apply_to_index(self.model, index, upserts, [])
                raise
        removed = self._prune(files, folders, report) if self.prune else []
        if upserts or removed:
            self.library.apply_to_index(self.model, index, upserts, removed)
        report.seconds = time.perf_counter() - started
        log.info(
            "indexed %d files: %d embedded, %d reused, %d moved, %d unchanged, %d errors, %d removed in %.1fs",
            report.seen, report.embedded, report.reused, report.moved, report.unchanged, report.errors,
            report.removed, report.seconds,
        )
        return report

    def _remember_roots(self, folders: list[Path]) -> None:
        with self.library.session() as s:
            for folder in folders:
                if s.get(Root, str(folder)) is None:
                    s.add(Root(path=str(folder)))

    def _plan(self, files: dict[str, Path], roots: list[Path], report: IndexReport) -> list[WorkItem]:
        """Which files need decoding: new, changed (size or mtime), or lacking this model's vector."""
        known: dict[str, tuple[int, int, float, str, bool]] = {}
        has_vector = select(Embedding.image_id).where(Embedding.model == self.model)
        with self.library.session() as s:
            rows = s.execute(
                select(
                    ImageRecord.path, ImageRecord.id, ImageRecord.size, ImageRecord.mtime, ImageRecord.status,
                    ImageRecord.id.in_(has_vector),
                ).where(_under_any(roots))
            )
            for path, image_id, size, mtime, status, embedded in rows:
                known[path] = (image_id, size, mtime, status, bool(embedded))
        work = []
        for path_str, path in files.items():
            try:
                st = path.stat()
            except OSError:
                try:  # a dangling or looping symlink: planned all the same, so its read fails and is recorded
                    st = path.lstat()
                except OSError as exc:  # gone since it was listed
                    log.warning("cannot stat %s: %s", path, exc)
                    continue
            row = known.get(path_str)
            if row is not None:
                image_id, size, mtime, status, embedded = row
                # Files that failed before are tried again: the cause (permissions, --max-pixels, a decoder
                # upgrade, a remounted drive) may be gone without the file changing.
                if size == st.st_size and mtime == st.st_mtime and status == "ok" and embedded:
                    report.unchanged += 1
                    continue
                work.append(WorkItem(path_str, st.st_size, st.st_mtime, image_id))
            else:
                work.append(WorkItem(path_str, st.st_size, st.st_mtime, None))
        return work

    def _write_batch(self, batch: Batch, report: IndexReport, upserts: list[int]) -> None:
        """Commit one batch: rows, vectors (embedded now or reused by content hash) and errors together.
        The ids whose vectors changed go into `upserts` before the commit, so an interrupt cannot lose them
        (an id recorded for a batch that then fails to commit is harmless: FAISS is updated from SQLite)."""
        to_embed: list[tuple[Decoded, ImageRecord]] = []
        changed: list[int] = []
        with self.library.session() as s:
            for record in batch.records:
                item = record.item
                row = s.get(ImageRecord, item.image_id) if item.image_id else None
                same_bytes = row is not None and record.error is None and row.sha256 == record.sha256
                if row is not None and not same_bytes:
                    self._drop_stale(s, row)  # vectors and text of what the file was, not what it is
                if same_bytes and any(e.model == self.model for e in row.embeddings):
                    _fill(row, record)  # touched (new mtime), same bytes: keep the vector
                    row.status, row.error = "ok", None
                    report.unchanged += 1
                    continue
                if record.error is not None:
                    lost_vector = row is not None and any(e.model == self.model for e in row.embeddings)
                    row = row or ImageRecord(path=item.path)
                    _fill(row, record)
                    row.status, row.error = "error", record.error
                    row.embeddings.clear()
                    s.add(row)
                    s.flush()
                    if lost_vector:  # a broken file that stays broken changes no vector, and no index
                        changed.append(row.id)
                    report.errors += 1
                    report.failures.append((item.path, record.error))
                    continue
                source = self._same_content(s, record.sha256, item.path)
                if row is None and source is not None and not os.path.exists(source.path):
                    source.path = item.path  # moved: the row follows the file, vectors and all
                    _fill(source, record)
                    report.moved += 1
                    continue
                row = row or ImageRecord(path=item.path)
                _fill(row, record)
                row.status, row.error = "ok", None
                s.add(row)
                s.flush()
                changed.append(row.id)
                vector = next((e.vector for e in source.embeddings if e.model == self.model), None) if source else None
                if vector is not None:
                    _set_vector(s, row.id, self.model, vector)
                    report.reused += 1
                else:
                    to_embed.append((record, row))
            if to_embed:
                assert batch.pixels is not None
                slots = torch.tensor([record.slot for record, _ in to_embed])
                vectors = self.encoder.encode_image_tensors(batch.pixels.index_select(0, slots))
                for (_, row), vector in zip(to_embed, vectors, strict=True):
                    _set_vector(s, row.id, self.model, encode_vector(vector))
                report.embedded += len(to_embed)
            if changed:
                Library.bump_generation(s, self.model)
                upserts.extend(changed)

    def _drop_stale(self, s, row: ImageRecord) -> None:
        """Other models' vectors, captions and OCR text of a file whose bytes changed: the next runs redo them."""
        others = [e for e in row.embeddings if e.model != self.model]
        for embedding in others:
            row.embeddings.remove(embedding)
            Library.bump_generation(s, embedding.model)
        s.execute(delete(Caption).where(Caption.image_id == row.id))
        s.execute(delete(OcrText).where(OcrText.image_id == row.id))

    def _same_content(self, s, sha256: str | None, path: str) -> ImageRecord | None:
        """An ok row with the same bytes and a vector from this model, preferring one whose file is gone."""
        if sha256 is None:
            return None
        rows = s.scalars(
            select(ImageRecord)
            .join(Embedding)
            .where(ImageRecord.sha256 == sha256, ImageRecord.status == "ok", ImageRecord.path != path,
                   Embedding.model == self.model)
        ).all()
        gone = [r for r in rows if not os.path.exists(r.path)]
        return (gone or rows or [None])[0]

    def _prune(self, files: dict[str, Path], folders: list[Path], report: IndexReport) -> list[int]:
        """Forget files that vanished from the folders just walked (moved ones were already claimed)."""
        if not folders:
            return []
        found = {folder for folder in folders if any(p.startswith(str(folder).rstrip("/") + "/") for p in files)}
        empty = [f for f in folders if f not in found]
        if empty:
            # An unmounted drive or a renamed share looks exactly like a folder whose photos were all deleted.
            log.warning("no images found under %s; keeping what the library knows of it (is the drive mounted?)",
                        ", ".join(map(str, empty)))
            folders = [f for f in folders if f in found]
            if not folders:
                return []
        spared = tuple(str(f).rstrip("/") + "/" for f in empty)  # an empty root nested in a walked one
        with self.library.session() as s:
            rows = s.execute(select(ImageRecord.id, ImageRecord.path).where(_under_any(folders))).all()
            gone = [
                image_id for image_id, path in rows
                if path not in files and not os.path.exists(path) and not path.startswith(spared)
            ]
            for start in range(0, len(gone), 10_000):
                s.execute(delete(ImageRecord).where(ImageRecord.id.in_(gone[start : start + 10_000])))
            if gone:
                Library.bump_generation(s, self.model)
        report.removed = len(gone)
        return gone


def _under_any(roots: list[Path]):
    """SQL: the path is one of `roots` or lies below one (no LIKE, so % and _ in names are safe)."""
    from sqlalchemy import or_

    clauses = []
    for root in roots:
        prefix = str(root).rstrip("/") + "/"
        clauses.append(ImageRecord.path == str(root))
        clauses.append(func.substr(ImageRecord.path, 1, len(prefix)) == prefix)
    return or_(*clauses) if clauses else ImageRecord.id.is_(None)


def _fill(row: ImageRecord, record: Decoded) -> None:
    item, meta = record.item, record.meta
    row.size, row.mtime, row.sha256 = item.size, item.mtime, record.sha256
    row.indexed_at = utcnow()
    if record.thumbnail:
        row.thumbnail = record.thumbnail
    if meta is not None:
        row.width, row.height = meta.width, meta.height
        row.display_width, row.display_height = meta.display_width, meta.display_height
        row.orientation, row.format, row.taken_at = meta.orientation, meta.format, meta.taken_at
        row.camera_make, row.camera_model = meta.camera_make, meta.camera_model


def _set_vector(s, image_id: int, model: str, vector: bytes) -> None:
    existing = s.get(Embedding, (image_id, model))
    if existing is None:
        s.add(Embedding(image_id=image_id, model=model, vector=vector))
    else:
        existing.vector = vector
