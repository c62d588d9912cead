"""The local writer: a decoded batch becomes rows, vectors and errors in the library, in one transaction."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, selectinload

from vlsearch.encoders.base import ImageEmbeddings
from vlsearch.indexer.items import Batch, Decoded
from vlsearch.indexer.report import Changes, IndexReport
from vlsearch.library import Embedding, ImageRecord, Library
from vlsearch.library.embeddings import decode_vectors, encode_vector
from vlsearch.library.records import drop_replaced_content, set_vector
from vlsearch.library.schema import ImageTag, ImageTagging, utcnow
from vlsearch.library.spaces import companion
from vlsearch.library.sql import in_chunks
from vlsearch.library.thumbs import store_thumbnail, thumbnail_relpath


def same_content(twins: list[ImageRecord], path: str) -> ImageRecord | None:
    """Of the rows with a file's bytes, one at another path, preferring one whose file is gone (it moved)."""
    rows = [r for r in twins if r.path != path]
    gone = [r for r in rows if not os.path.exists(r.path)]
    return (gone or rows or [None])[0]


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
        fresh: list[ImageRecord] = []  # rows whose vectors change: their ids are known after the one flush below
        new: list[Decoded] = []  # files never seen, with no twin: rows and vectors inserted in bulk
        with self.library.session() as s:
            twins = self._twins(s, {d.sha256 for d in batch.items if d.ok and d.sha256})
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
                    self._record_error(s, row, decoded, report, fresh)
                elif row is None and not twins.get(decoded.sha256 or ""):
                    new.append(decoded)
                else:
                    row = self._place(s, row, decoded, report, fresh, twins)
                    if row is not None:
                        to_embed.append((decoded, row))
            s.flush()  # once a batch, not once a row: 2,000 new rows took 2.6 s with a flush each
            changed = list(dict.fromkeys(row.id for row in fresh))
            if to_embed or new:
                assert batch.pixels is not None
                slots = torch.tensor([decoded.slot for decoded, _ in to_embed] + [decoded.slot for decoded in new])
                embedded = self._spaces(self.embed(batch.pixels.index_select(0, slots)))
                self._store(s, {k: v[: len(to_embed)] for k, v in embedded.items()}, [row for _, row in to_embed])
                changed += self._insert(s, new, {k: v[len(to_embed):] for k, v in embedded.items()})
                report.embedded += len(to_embed) + len(new)
            if changed:
                for space in self.dims:
                    Library.bump_generation(s, space)
                changes.upserts.extend(changed)

    def _spaces(self, embedded: ImageEmbeddings) -> dict[str, np.ndarray]:
        """The model's output by the space each part is stored under."""
        spaces = {self.model: embedded.vectors} | {companion(self.model, r): v for r, v in embedded.companions.items()}
        if spaces.keys() != self.dims.keys():
            raise ValueError(f"the model gave vectors of {sorted(spaces)}, not of {sorted(self.dims)}")
        return spaces

    def _insert(self, s: Session, new: list[Decoded], spaces: dict[str, np.ndarray]) -> list[int]:
        """Rows and vectors of files never seen, two bulk INSERTs: ORM objects cost 0.3 ms a row to flush, and a
        first run is all new files. Their ids, in `new`'s order."""
        if not new:
            return []
        query = insert(ImageRecord).returning(ImageRecord.id, sort_by_parameter_order=True)
        ids = list(s.scalars(query, [{"path": d.item.path, **self._values(d)} for d in new]))
        s.execute(insert(Embedding), [{"image_id": image_id, "model": space, "vector": encode_vector(vectors[i])}
                                      for space, vectors in spaces.items() for i, image_id in enumerate(ids)])
        return ids

    def _store(self, s: Session, spaces: dict[str, np.ndarray], rows: list[ImageRecord]) -> None:
        """Set each row's vectors. Tags may come from companions (a classifier's probabilities): a row whose
        companions changed while its search vector did not (filled in for an image indexed before) is tagged again;
        a changed search vector has its tags dropped by the database itself (migration 0004's triggers)."""
        retag = []
        for i, row in enumerate(rows):
            moved = {space for space, vectors in spaces.items() if set_vector(row, space, vectors[i])}
            if moved and self.model not in moved:
                retag.append(row.id)
        for table in (ImageTag, ImageTagging) if retag else ():
            s.execute(delete(table).where(table.model == self.model, table.image_id.in_(retag)))

    def _has_vector(self, row: ImageRecord) -> bool:
        """The row holds the search vector and every companion: else the model runs on it again."""
        return self.dims.keys() <= {e.model for e in row.embeddings}

    def _record_error(self, s, row: ImageRecord | None, decoded: Decoded, report: IndexReport,
                      fresh: list[ImageRecord]) -> None:
        lost_vector = row is not None and any(e.model in self.dims for e in row.embeddings)
        row = row or ImageRecord(path=decoded.item.path, embeddings=[])
        self._fill(row, decoded)
        row.status, row.error = "error", decoded.error
        row.embeddings.clear()
        s.add(row)
        if lost_vector:  # a broken file that stays broken changes no vector, and no index
            fresh.append(row)
        report.errors += 1
        report.over_pixel_limit += decoded.over_pixel_limit
        report.failures.append((decoded.item.path, decoded.error or ""))

    def _place(self, s, row: ImageRecord | None, decoded: Decoded, report: IndexReport, fresh: list[ImageRecord],
               twins: dict[str, list[ImageRecord]]) -> ImageRecord | None:
        """The row of a file that decoded: a moved file takes its old row (None: nothing left to do), a copy gets
        its twin's vector (None too); else the row that needs the model's vector."""
        source = same_content(twins.get(decoded.sha256 or "", []), decoded.item.path)
        if row is None and source is not None and not os.path.exists(source.path):
            source.path = decoded.item.path  # moved: the row follows the file, vectors and all
            self._fill(source, decoded)
            report.moved += 1
            return None
        row = row or ImageRecord(path=decoded.item.path, embeddings=[])  # a new row's vectors need no query
        self._fill(row, decoded)
        s.add(row)
        fresh.append(row)
        blobs = {e.model: e.vector for e in source.embeddings if e.model in self.dims} if source else {}
        if blobs.keys() != self.dims.keys():
            return row
        self._store(s, {space: decode_vectors([blob], self.dims[space]) for space, blob in blobs.items()}, [row])
        report.reused += 1
        return None

    def _twins(self, s, shas: set[str]) -> dict[str, list[ImageRecord]]:
        """sha256 -> the ok rows with those bytes and a vector from this model, their vectors loaded: read once a
        batch (a query a row cost 0.4 ms)."""
        found: dict[str, list[ImageRecord]] = {}
        for chunk in in_chunks(sorted(shas)):
            rows = s.scalars(select(ImageRecord).join(Embedding).options(selectinload(ImageRecord.embeddings))
                             .where(ImageRecord.sha256.in_(chunk), ImageRecord.status == "ok",
                                    Embedding.model == self.model).order_by(ImageRecord.id))
            for row in rows:
                found.setdefault(row.sha256, []).append(row)
        return found

    def _fill(self, row: ImageRecord, decoded: Decoded) -> None:
        for name, value in self._values(decoded).items():
            setattr(row, name, value)

    def _values(self, decoded: Decoded) -> dict[str, object]:
        """A row's columns from what decoding found (its thumbnail written, if decoding did not)."""
        item, meta = decoded.item, decoded.meta
        values: dict[str, object] = {"size": item.size, "mtime": item.mtime, "sha256": decoded.sha256,
                                     "indexed_at": utcnow()}
        if decoded.ok:
            values |= {"status": "ok", "error": None, "thumbnail": (
                store_thumbnail(self.library.root, decoded.sha256, decoded.thumbnail) if decoded.thumbnail
                else thumbnail_relpath(decoded.sha256))}
        if meta is not None:
            values |= {"width": meta.width, "height": meta.height, "display_width": meta.display_width,
                       "display_height": meta.display_height, "orientation": meta.orientation, "format": meta.format,
                       "taken_at": meta.taken_at, "camera_make": meta.camera_make, "camera_model": meta.camera_model}
        return values
