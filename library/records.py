"""The rules of a library's records that the indexer, the Parquet merge and search all follow, written once so they
cannot drift apart: what a changed file loses, when a vector counts as changed, which paths lie in a folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from sqlalchemy import ColumnElement, delete, false, func, or_
from sqlalchemy.orm import Session

from vlsearch.library.embeddings import decode_vectors, encode_vector
from vlsearch.library.schema import Caption, Embedding, ImageRecord, OcrText

# Folders one under_any may hold: each adds two OR terms, and SQLite refuses an expression more than 1,000 deep
# (`vlsearch index photos/*.jpg` over 500 files did, before its roots were queried in chunks).
UNDER_ANY_MAX = 200
VECTOR_TOLERANCE = 1e-3  # float16 rounding: a vector this close to the stored one is the same vector
# How `drop_replaced_content` deletes. The session's copies of the deleted rows are found by the keys the DELETE
# returns, not by testing every object the session holds ("evaluate", the default), and the session is not flushed
# before each DELETE (the default, which writes a batch row by row). Replacing 4,000 rows with captions and OCR text
# in one Parquet merge took 51 s with both defaults, 6.0 s by key, 3.1 s by key without the flushes.
_DELETE_OPTIONS = {"synchronize_session": "fetch", "autoflush": False}


def drop_replaced_content(session: Session, row: ImageRecord, keep_model: str | None) -> list[str]:
    """Another file now lives at `row`'s path (its bytes changed): what was known of the old one goes, its captions,
    OCR text and every model's vector but `keep_model`'s, so the next runs redo them for the new bytes. Returns the
    models whose vectors were dropped: the caller bumps their generations and records the FAISS removals.

    Captions and OCR text go by SQL DELETE, and the session's copies of the deleted rows leave it: one added again
    later in the transaction is a plain INSERT that meets no deleted twin, and a caller that cached those copies
    must forget them. The session is not flushed first, so text added to it and not yet flushed is not seen: add
    text after this call, or flush before it."""
    dropped = [e for e in row.embeddings if e.model != keep_model]
    for embedding in dropped:
        row.embeddings.remove(embedding)
    for table in (Caption, OcrText):
        session.execute(delete(table).where(table.image_id == row.id), execution_options=_DELETE_OPTIONS)
    return [e.model for e in dropped]


def set_vector(row: ImageRecord, model: str, vector: np.ndarray) -> bool:
    """Store `model`'s vector of a row unless it holds that vector already (to float16 precision, what is stored):
    whether it changed, so a re-import or re-index of the same bytes leaves the FAISS index alone."""
    current = next((e for e in row.embeddings if e.model == model), None)
    if current is None:
        row.embeddings.append(Embedding(model=model, vector=encode_vector(vector)))
        return True
    if np.abs(decode_vectors([current.vector], len(vector))[0] - vector).max() <= VECTOR_TOLERANCE:
        return False
    current.vector = encode_vector(vector)
    return True


def under_any(column: ColumnElement[str], folders: Iterable[Path | str]) -> ColumnElement[bool]:
    """SQL: `column` (a path) is one of `folders` or lies below one. A prefix compare, not LIKE: % and _ in folder
    names are characters, and /photos2 is not inside /photos. No folders: no path. At most UNDER_ANY_MAX folders:
    query longer lists a chunk at a time (`in_chunks(folders, UNDER_ANY_MAX)`)."""
    folders = list(folders)
    if len(folders) > UNDER_ANY_MAX:
        raise ValueError(f"{len(folders)} folders in one query; SQLite takes {UNDER_ANY_MAX} (query in chunks)")
    clauses = []
    for folder in folders:
        prefix = str(folder).rstrip("/") + "/"
        clauses.append(column == str(folder))
        clauses.append(func.substr(column, 1, len(prefix)) == prefix)
    return or_(*clauses) if clauses else false()
