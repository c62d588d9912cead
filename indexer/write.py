"""The local writer: a decoded batch becomes rows, vectors and errors in the library, in one transaction."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vlsearch.encoders.base import ImageEmbeddings
from vlsearch.indexer.items import Batch, Decoded
from vlsearch.indexer.report import Changes, IndexReport
from vlsearch.library import Embedding, ImageRecord, Library
from vlsearch.library.embeddings import decode_vectors
from vlsearch.library.records import drop_replaced_content, set_vector
from vlsearch.library.schema import ImageTag, ImageTagging, utcnow
from vlsearch.library.spaces import companion
from vlsearch.library.thumbs import store_thumbnail, thumbnail_relpath


class LibraryWriter:
    """Commits batches for one model: a file with the same bytes as before keeps its vectors, a moved file its row,
    a copy reuses its twin's; only what is left goes to the model (`embed`). `companions`: role -> dimension of the
    companion vectors `embed` gives too (library/spaces.py), stored and kept in step with the search vector."""

    def __init__(self, library: Library, model: str, dim: int, embed: Callable[[torch.Tensor], ImageEmbeddings],
                 companions: dict[str, int] | None = None) -> None:
        self.library = library
        self.model = model
        self.dim = dim
        self.embed = embed
        self.dims = {model: dim} | {companion(model, role): d for role, d in (companions or {}).items()}

    def write(self, batch: Batch, report: IndexReport, changes: Changes) -> None:
        """Commit one batch: rows, vectors (embedded now or reused by content hash) and errors together."""
        to_embed: list[tuple[Decoded, ImageRecord]] = []
        changed: list[int] = []
        with self.library.session() as s:
            for decoded in batch.items:
                row = s.get(ImageRecord, decoded.item.image_id) if decoded.item.image_id else None
                same_bytes = row is not None and decoded.ok and row.sha256 == decoded.sha256
                if row is not None and not same_bytes:  # vectors and text of what the file was, not what it is
                    for model in drop_replaced_content(s, row, keep_model=self.model):
                        Library.bump_generation(s, model)
                if same_bytes and self._has_vector(row):
                    self._fill(row, decoded)  # touched (new mtime), same bytes: keep the vector
                    report.unchanged += 1
                elif not decoded.ok:
                    self._record_error(s, row, decoded, report, changed)
                else:
                    row = self._place(s, row, decoded, report, changed)
                    if row is not None:
                        to_embed.append((decoded, row))
            if to_embed:
                assert batch.pixels is not None
                slots = torch.tensor([decoded.slot for decoded, _ in to_embed])
                self._store(s, self.embed(batch.pixels.index_select(0, slots)), [row for _, row in to_embed], changed)
                report.embedded += len(to_embed)
            if changed:
                for space in self.dims:
                    Library.bump_generation(s, space)
                changes.upserts.extend(changed)

    def _store(self, s: Session, embedded: ImageEmbeddings, rows: list[ImageRecord], changed: list[int]) -> None:
        """Set each row's vectors. Tags may come from companions (a classifier's probabilities): a row whose
        companions changed while its search vector did not (filled in for an image indexed before) is tagged again;
        a changed search vector has its tags dropped by the database itself (migration 0004's triggers)."""
        spaces = {self.model: embedded.vectors} | {companion(self.model, r): v for r, v in embedded.companions.items()}
        if spaces.keys() != self.dims.keys():
            raise ValueError(f"the model gave vectors of {sorted(spaces)}, not of {sorted(self.dims)}")
        retag = []
        for i, row in enumerate(rows):
            moved = {space for space, vectors in spaces.items() if set_vector(row, space, vectors[i])}
            if moved and self.model not in moved:
                retag.append(row.id)
            if row.id not in changed:  # a row whose vectors are filled in: its file had not changed
                changed.append(row.id)
        for table in (ImageTag, ImageTagging) if retag else ():
            s.execute(delete(table).where(table.model == self.model, table.image_id.in_(retag)))

    def _has_vector(self, row: ImageRecord) -> bool:
        """The row holds the search vector and every companion: else the model runs on it again."""
        return self.dims.keys() <= {e.model for e in row.embeddings}

    def _record_error(self, s, row: ImageRecord | None, decoded: Decoded, report: IndexReport,
                      changed: list[int]) -> None:
        lost_vector = row is not None and any(e.model in self.dims for e in row.embeddings)
        row = row or ImageRecord(path=decoded.item.path)
        self._fill(row, decoded)
        row.status, row.error = "error", decoded.error
        row.embeddings.clear()
        s.add(row)
        s.flush()
        if lost_vector:  # a broken file that stays broken changes no vector, and no index
            changed.append(row.id)
        report.errors += 1
        report.over_pixel_limit += decoded.over_pixel_limit
        report.failures.append((decoded.item.path, decoded.error or ""))

    def _place(self, s, row: ImageRecord | None, decoded: Decoded, report: IndexReport,
               changed: list[int]) -> ImageRecord | None:
        """The row of a file that decoded: a moved file takes its old row (None: nothing left to do), a copy gets
        its twin's vector (None too); else the row that needs the model's vector."""
        source = self._same_content(s, decoded.sha256, decoded.item.path)
        if row is None and source is not None and not os.path.exists(source.path):
            source.path = decoded.item.path  # moved: the row follows the file, vectors and all
            self._fill(source, decoded)
            report.moved += 1
            return None
        row = row or ImageRecord(path=decoded.item.path)
        self._fill(row, decoded)
        s.add(row)
        s.flush()
        changed.append(row.id)
        blobs = {e.model: e.vector for e in source.embeddings if e.model in self.dims} if source else {}
        if blobs.keys() != self.dims.keys():
            return row
        for space, blob in blobs.items():
            set_vector(row, space, decode_vectors([blob], self.dims[space])[0])
        report.reused += 1
        return None

    def _same_content(self, s, sha256: str | None, path: str) -> ImageRecord | None:
        """An ok row with the same bytes and a vector from this model, preferring one whose file is gone."""
        if sha256 is None:
            return None
        rows = s.scalars(
            select(ImageRecord).join(Embedding)
            .where(ImageRecord.sha256 == sha256, ImageRecord.status == "ok", ImageRecord.path != path,
                   Embedding.model == self.model)
        ).all()
        gone = [r for r in rows if not os.path.exists(r.path)]
        return (gone or rows or [None])[0]

    def _fill(self, row: ImageRecord, decoded: Decoded) -> None:
        item, meta = decoded.item, decoded.meta
        row.size, row.mtime, row.sha256 = item.size, item.mtime, decoded.sha256
        row.indexed_at = utcnow()
        if decoded.ok:
            row.status, row.error = "ok", None
            row.thumbnail = (store_thumbnail(self.library.root, decoded.sha256, decoded.thumbnail)
                             if decoded.thumbnail else thumbnail_relpath(decoded.sha256))
        if meta is not None:
            row.width, row.height = meta.width, meta.height
            row.display_width, row.display_height = meta.display_width, meta.display_height
            row.orientation, row.format, row.taken_at = meta.orientation, meta.format, meta.taken_at
            row.camera_make, row.camera_model = meta.camera_make, meta.camera_model
