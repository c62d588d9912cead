"""Import: rows written by an export, by distributed indexing (its shards use this format) or by another tool,
merged into a library by path, one transaction per batch: a run that dies keeps its finished batches, and running
it again changes nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from vlsearch.library.parquet_io.format import ProgressHook
from vlsearch.library.parquet_io.sources import Incoming, Source, batches, open_sources, read_batch
from vlsearch.library.parquet_io.upsert import BatchMerge, ImportReport, VectorChanges
from vlsearch.library.store import Library
from vlsearch.library.vectors import VectorIndex

log = logging.getLogger(__name__)


def import_parquet(lib: Library, sources: Sequence[Path], *, model: str | None = None, batch_rows: int = 2000,
                   progress: ProgressHook | None = None, update_index: bool = True) -> ImportReport:
    """Merge Parquet files (or folders of them, read in name order) into `lib`, upserting by path.

    The caller holds the library's writer lock (`lib.writer(...)`). Every file is checked before anything is
    written: its embeddings' model and dimension come from its b"vlsearch" metadata, or from `model` for a file
    without it, and must agree with the library. A row whose path is known keeps its id: with the same sha256 it
    gets the file's vector, caption and OCR text; with another sha256 its content is replaced, and the captions,
    OCR text and other models' vectors of the old content are dropped. Invalid rows are skipped and reported.
    Each batch of `batch_rows` rows commits on its own; the FAISS index is brought up to date at the end, or with
    `update_index=False` left stale (rebuilt from SQLite when next used, or brought up to date by the caller
    from `report.changes`), for a caller merging many files in turn that would otherwise rewrite the index file
    after each."""
    started = time.perf_counter()
    if batch_rows < 1:
        raise ValueError("batch rows must be at least 1")
    opened = open_sources(lib, sources, model)
    dims = {s.model: s.dim for s in opened if s.model is not None and s.dim is not None}
    for name, dim in dims.items():
        lib.ensure_model(name, dim)
    report = ImportReport(models=sorted(dims), changes={name: ([], []) for name in dims})
    # Current before the import: the deltas apply to it.
    indexes = {name: lib.vector_index(name) for name in dims} if update_index else {}
    if progress:
        progress.start(sum(s.rows for s in opened))
    try:
        for source in opened:
            _merge_source(lib, source, batch_rows, report, progress)
    except BaseException:
        # Committed batches stay (after an interrupt, or a file that turns out unreadable halfway): bring FAISS up to
        # date with them so a search right away sees them. Failing that, the next open rebuilds the index.
        try:
            _update_indexes(lib, indexes, report.changes)
        except Exception as exc:
            log.warning("the FAISS index is rebuilt when next used: %s", exc)
        raise
    _update_indexes(lib, indexes, report.changes)
    report.seconds = time.perf_counter() - started
    log.info("imported %d rows into %s: %d added, %d updated, %d unchanged, %d skipped in %.1fs", report.read,
             lib.root, report.added, report.updated, report.unchanged, report.skipped, report.seconds)
    return report


def _merge_source(lib: Library, source: Source, batch_rows: int, report: ImportReport,
                  progress: ProgressHook | None) -> None:
    start = 0
    for batch in batches(source, batch_rows):
        skipped_before = report.skipped
        rows = list(read_batch(source, batch, start, report.skip))
        start += batch.num_rows
        report.read += batch.num_rows
        if rows:
            _write_batch(lib, source, rows, report)
        if progress:
            progress.advance(batch.num_rows, report.skipped - skipped_before)


def _update_indexes(lib: Library, indexes: dict[str, VectorIndex], changes: VectorChanges) -> None:
    for name, index in indexes.items():
        upserts, removed = changes.get(name, ([], []))
        if upserts or removed:
            lib.apply_to_index(name, index, upserts, removed)


def _write_batch(lib: Library, source: Source, rows: list[Incoming], report: ImportReport) -> None:
    """One transaction: upsert the batch's rows, their vectors, text and thumbnails, and bump the generation of
    every model whose vectors changed. The FAISS ids go into `report.changes` before the commit (an id recorded for
    a batch that then fails to commit is harmless: FAISS is updated from SQLite)."""
    with lib.session() as s:
        merge = BatchMerge(lib.root, s, source.model, report)
        merge.write(rows)
        for name in merge.touched:
            Library.bump_generation(s, name)
