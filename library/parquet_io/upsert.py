"""One batch of valid rows upserted by path in one session, and the report of what an import did."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, selectinload

from vlsearch.library.embeddings import encode_vector
from vlsearch.library.parquet_io.format import META_COLUMNS
from vlsearch.library.parquet_io.sources import Incoming
from vlsearch.library.records import drop_replaced_content, set_vector
from vlsearch.library.schema import Caption, Embedding, ImageRecord, OcrText, utcnow
from vlsearch.library.sql import in_chunks
from vlsearch.library.thumbs import store_thumbnail, thumbnail_relpath

log = logging.getLogger(__name__)

MAX_THUMBNAIL_BYTES = 4 << 20  # a thumbnail is a 256 px JPEG; anything far larger is not one
MAX_REASONS = 1_000  # skipped rows listed in a report (all are counted)

# model -> (ids whose vectors were added or changed, ids whose vectors were removed)
VectorChanges = dict[str, tuple[list[int], list[int]]]


@dataclass
class ImportReport:
    """What an import did, for the summary line and for tests."""

    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (path, or file and row; why), the first 1,000
    thumbnails: int = 0  # thumbnail files written
    models: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # For a caller that passed update_index=False and brings FAISS up to date itself, once, with
    # `Library.apply_to_index`.
    changes: VectorChanges = field(default_factory=dict)

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append((where, reason))


def _assign(row: ImageRecord, name: str, value: object) -> bool:
    """Set one column of a row; whether that changed it."""
    if getattr(row, name) == value:
        return False
    setattr(row, name, value)
    return True


class BatchMerge:
    """The rows of one batch brought into one session; `touched` names the models whose vectors changed."""

    def __init__(self, root: Path, s: Session, model: str | None, report: ImportReport) -> None:
        self.root = root
        self.s = s
        self.model = model
        self.report = report
        self.touched: set[str] = set()
        # Captions and OCR text of the batch's rows by image id: those the library held (in the session) and those
        # the batch adds (not yet in it).
        self.captions: dict[int, dict[str, Caption]] = {}
        self.ocr: dict[int, OcrText] = {}

    def write(self, rows: list[Incoming]) -> None:
        known = {r.path: r for paths in in_chunks(list({r.path for r in rows})) for r in self.s.scalars(
            select(ImageRecord).where(ImageRecord.path.in_(paths)).options(selectinload(ImageRecord.embeddings))
        )}
        seen = Counter(r.path for r in rows)
        new = [r for r in rows if r.path not in known and seen[r.path] == 1]
        if new:
            self.insert_new(new)
        rest = [r for r in rows if r.path in known or seen[r.path] > 1]
        self._load_text([r.id for r in known.values()])
        fresh = {path: ImageRecord(path=path, size=0, mtime=0.0, status="ok", embeddings=[])
                 for path in dict.fromkeys(r.path for r in rest if r.path not in known)}
        self.s.add_all(fresh.values())
        self.s.flush()
        known.update(fresh)
        for incoming in rest:
            changed = self.upsert(known[incoming.path], incoming)
            if fresh.pop(incoming.path, None) is not None:
                self.report.added += 1
            elif changed:
                self.report.updated += 1
            else:
                self.report.unchanged += 1
        self._add_new_text()

    def _load_text(self, ids: list[int]) -> None:
        for chunk in in_chunks(ids):
            for caption in self.s.scalars(select(Caption).where(Caption.image_id.in_(chunk))):
                self.captions.setdefault(caption.image_id, {})[caption.model] = caption
            self.ocr.update((o.image_id, o) for o in self.s.scalars(select(OcrText).where(OcrText.image_id.in_(chunk))))

    def _add_new_text(self) -> None:
        """Captions and OCR text the batch wrote for the first time join the session only now: a row replaced again
        later in the batch drops its cached text, and `drop_replaced_content` does not see unflushed text."""
        cached = [*(c for by_model in self.captions.values() for c in by_model.values()), *self.ocr.values()]
        self.s.add_all(text for text in cached if text not in self.s)

    def insert_new(self, rows: list[Incoming]) -> None:
        """Rows of paths the library does not know, each once in the batch: bulk INSERTs, several times faster than
        one ORM object per row (what merging the shards of a distributed run is made of)."""
        now = utcnow()
        values = []
        for r in rows:
            meta = {name: r.meta.get(name) for name in META_COLUMNS}
            meta["size"] = meta["size"] or 0
            meta["mtime"] = meta["mtime"] or 0.0
            values.append({
                "path": r.path, "sha256": r.sha256, **meta, "status": r.status or "ok",
                "error": r.error if r.status == "error" else None, "indexed_at": now,
                "thumbnail": self.place_thumbnail(r),
            })
        ids = self.s.scalars(insert(ImageRecord).returning(ImageRecord.id, sort_by_parameter_order=True), values).all()
        vectors, captions, ocr = [], [], []
        for image_id, r in zip(ids, rows, strict=True):
            if r.status == "error":
                continue
            if r.vector is not None and self.model is not None:
                vectors.append({"image_id": image_id, "model": self.model, "vector": encode_vector(r.vector)})
                self._upserted(self.model, image_id)
            if r.caption is not None:
                captions.append({"image_id": image_id, "model": r.caption[0], "text": r.caption[1], "created_at": now})
            if r.ocr is not None:
                ocr.append({"image_id": image_id, "engine": r.ocr[0], "text": r.ocr[1], "created_at": now})
        for table, rows_of in ((Embedding, vectors), (Caption, captions), (OcrText, ocr)):
            if rows_of:
                self.s.execute(insert(table), rows_of)
        self.report.added += len(rows)

    def upsert(self, row: ImageRecord, incoming: Incoming) -> bool:
        """Bring one row to what the file says of it; whether anything changed."""
        if incoming.sha256 is not None and row.sha256 != incoming.sha256:
            changed = self._replace(row, incoming)
        else:
            changed = False
            for name, value in incoming.meta.items():
                keep = value is None and name in ("size", "mtime")  # required columns: unknown is not 0
                changed |= _assign(row, name, getattr(row, name) if keep else value)
        changed |= self._status(row, incoming)
        if incoming.vector is not None and self.model is not None and set_vector(row, self.model, incoming.vector):
            self._upserted(self.model, row.id)
            changed = True
        if incoming.status != "error":
            changed |= self._caption(row, incoming.caption)
            changed |= self._ocr(row, incoming.ocr)
        rel = self.place_thumbnail(incoming) if incoming.sha256 else None
        if rel is not None:
            changed |= _assign(row, "thumbnail", rel)
        if changed:
            row.indexed_at = utcnow()
        return changed

    def _replace(self, row: ImageRecord, incoming: Incoming) -> bool:
        """Another file now lives at this path: what was known of the old one goes, what is unknown of the new one
        stays unknown (the next `vlsearch index` of the file fills it in)."""
        dropped = drop_replaced_content(self.s, row, self.model if incoming.vector is not None else None)
        for name in dropped:
            self._removed(name, row.id)
        self.captions.pop(row.id, None)  # deleted from the session too
        self.ocr.pop(row.id, None)
        changed = bool(dropped) | _assign(row, "sha256", incoming.sha256)
        for name in META_COLUMNS:
            value = incoming.meta.get(name)
            changed |= _assign(row, name, 0 if value is None and name in ("size", "mtime") else value)
        return _assign(row, "thumbnail", None) | changed

    def _status(self, row: ImageRecord, incoming: Incoming) -> bool:
        if incoming.status == "error":
            changed = _assign(row, "status", "error") | _assign(row, "error", incoming.error)
            for embedding in list(row.embeddings):
                row.embeddings.remove(embedding)
                self._removed(embedding.model, row.id)
                changed = True
            return changed
        if incoming.status == "ok" or incoming.vector is not None:
            return _assign(row, "status", "ok") | _assign(row, "error", None)
        return False

    def _caption(self, row: ImageRecord, caption: tuple[str, str] | None) -> bool:
        if caption is None:
            return False
        name, text = caption
        known = self.captions.setdefault(row.id, {}).get(name)
        if known is None:
            self.captions[row.id][name] = Caption(image_id=row.id, model=name, text=text)
            return True
        if known.text == text:
            return False
        known.text, known.created_at = text, utcnow()
        return True

    def _ocr(self, row: ImageRecord, ocr: tuple[str, str] | None) -> bool:
        if ocr is None:
            return False
        engine, text = ocr
        read = self.ocr.get(row.id)
        if read is None:
            self.ocr[row.id] = OcrText(image_id=row.id, engine=engine, text=text)
            return True
        if (read.engine, read.text) == (engine, text):
            return False
        read.engine, read.text, read.created_at = engine, text, utcnow()
        return True

    def _upserted(self, model: str, image_id: int) -> None:
        self.touched.add(model)
        if model in self.report.changes:
            self.report.changes[model][0].append(image_id)

    def _removed(self, model: str, image_id: int) -> None:
        self.touched.add(model)
        if model in self.report.changes:
            self.report.changes[model][1].append(image_id)

    def place_thumbnail(self, incoming: Incoming) -> str | None:
        """The thumbnail of a row's content, written from the file's bytes if it is not there yet (thumbnails are
        named by content hash, so identical files share one); None when there is none."""
        if incoming.sha256 is None:
            return None
        rel = thumbnail_relpath(incoming.sha256)
        if (self.root / rel).exists():
            return rel
        data = incoming.thumbnail
        if not data:
            return None
        if len(data) > MAX_THUMBNAIL_BYTES or not data.startswith(b"\xff\xd8\xff"):
            log.warning("%s: its thumbnail is not a JPEG of at most %d bytes; not written", incoming.path,
                        MAX_THUMBNAIL_BYTES)
            return None
        self.report.thumbnails += 1
        return store_thumbnail(self.root, incoming.sha256, data)
