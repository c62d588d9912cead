"""Export: every image row of a library as a folder of Parquet part files, streamed from SQLite so a library of
any size fits in memory; each part is written under a temporary name and renamed when complete."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Select, and_, false, func, select

from vlsearch.library.embeddings import decode_vectors
from vlsearch.library.errors import ModelMismatchError
from vlsearch.library.parquet_io.format import META_COLUMNS, FolderNotEmpty, ParquetError, ProgressHook, parquet_schema
from vlsearch.library.schema import Caption, Embedding, ImageRecord, OcrText
from vlsearch.library.store import Library
from vlsearch.library.tags import tags_of
from vlsearch.library.thumbs import thumbnail_relpath

log = logging.getLogger(__name__)

PART_NAME = "part-{:05d}.parquet"
EXPORT_CHUNK_ROWS = 10_000  # rows per SQLite fetch and per row group; fewer with thumbnails (~10 KB each)
EXPORT_THUMB_CHUNK_ROWS = 1_000


@dataclass
class ExportReport:
    """What an export wrote, for the summary line and for tests."""

    out: Path
    model: str
    caption_model: str | None = None
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    errors: int = 0  # rows of files that could not be read (status error)
    vectors: int = 0
    captions: int = 0
    ocr: int = 0
    thumbnails: int = 0
    seconds: float = 0.0


def export_parquet(lib: Library, out: Path, model: str | None = None, *, thumbnails: bool = False,
                   rows_per_file: int = 100_000, overwrite: bool = False,
                   progress: ProgressHook | None = None) -> ExportReport:
    """Write every image row (ok and error) of `lib` to `out`/part-NNNNN.parquet, with `model`'s vectors (default:
    the library's), the captions of its caption model, OCR text and, if asked, thumbnails.

    Rows come from one SELECT streamed in chunks: a consistent snapshot even while an indexer writes, and memory
    bounded by a chunk. An `out` that holds files is refused unless `overwrite`, which deletes its *.parquet files
    first (other files are left alone)."""
    started = time.perf_counter()
    if rows_per_file < 1:
        raise ValueError("rows per file must be at least 1")
    model = model or lib.default_model()
    if model is None:
        raise ModelMismatchError(lib.root, "", [])
    dim = lib.require_model(model).dim
    caption_model = lib.caption_model()
    out = Path(out).expanduser().absolute()
    _prepare_folder(out, overwrite)
    report = ExportReport(out=out, model=model, caption_model=caption_model)
    schema = parquet_schema(dim, model)
    chunk = min(rows_per_file, EXPORT_THUMB_CHUNK_ROWS if thumbnails else EXPORT_CHUNK_ROWS)
    parts = _PartWriter(out, schema, rows_per_file)
    try:
        with lib.session() as s:
            if progress:
                progress.start(s.scalar(select(func.count()).select_from(ImageRecord)) or 0)
            for rows in s.execute(_export_query(model, caption_model, chunk)).partitions():
                tags = tags_of(lib, [row.id for row in rows])
                parts.write(_export_table(rows, schema, dim, lib.root if thumbnails else None, report, tags))
                if progress:
                    progress.advance(len(rows))
        report.files = parts.close()
    except BaseException:
        parts.abort()
        raise
    report.seconds = time.perf_counter() - started
    log.info("exported %d rows of %s to %s in %d parts in %.1fs", report.rows, lib.root, out, len(report.files),
             report.seconds)
    return report


def _export_query(model: str, caption_model: str | None, chunk: int) -> Select:
    """Each image with its vector of `model`, its caption of `caption_model` and its OCR text, in `chunk`s."""
    return (
        select(ImageRecord.path, ImageRecord.id, ImageRecord.sha256, *(getattr(ImageRecord, c) for c in META_COLUMNS),
               ImageRecord.status, ImageRecord.error, Embedding.vector, Caption.text, Caption.model, OcrText.text,
               OcrText.engine, ImageRecord.thumbnail)
        .outerjoin(Embedding, and_(Embedding.image_id == ImageRecord.id, Embedding.model == model))
        .outerjoin(Caption, and_(Caption.image_id == ImageRecord.id,
                                 Caption.model == caption_model if caption_model else false()))
        .outerjoin(OcrText, OcrText.image_id == ImageRecord.id)
        .order_by(ImageRecord.id)
        .execution_options(yield_per=chunk)
    )


def _prepare_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ParquetError(f"{out} is a file; an export is a folder of part files: name a new folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FolderNotEmpty(out)
        for old in [*out.glob("*.parquet"), *out.glob(".part-*.tmp")]:
            old.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParquetError(f"cannot create {out}: {exc.strerror or exc}") from None


def _export_table(rows: Sequence, schema: pa.Schema, dim: int, thumbs_root: Path | None,
                  report: ExportReport, tags: dict[int, list[str]]) -> pa.Table:
    """One chunk of SQLite rows, with their images' tags, as an Arrow table of `schema`."""
    columns = list(zip(*rows, strict=True))
    names = ["path", "id", "sha256", *META_COLUMNS, "status", "error"]
    arrays = [pa.array(columns[i], type=schema.field(name).type) for i, name in enumerate(names)]
    blobs, caption, caption_model, ocr_text, ocr_engine, thumb_paths = columns[len(names):]
    has_vector = [i for i, blob in enumerate(blobs) if blob is not None]
    vectors = np.zeros((len(rows), dim), dtype=np.float32)
    vectors[has_vector] = decode_vectors([blobs[i] for i in has_vector], dim)
    missing = np.ones(len(rows), dtype=bool)
    missing[has_vector] = False
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim, mask=pa.array(missing)))
    arrays += [pa.array(column, type=pa.string()) for column in (caption, caption_model, ocr_text, ocr_engine)]
    arrays.append(pa.array([tags.get(image_id, []) for image_id in columns[1]], type=pa.list_(pa.string())))
    shas = columns[2]
    thumbs = ([_read_thumbnail(thumbs_root, rel, sha) for rel, sha in zip(thumb_paths, shas, strict=True)]
              if thumbs_root is not None else [None] * len(rows))
    arrays.append(pa.array(thumbs, type=pa.binary()))
    report.rows += len(rows)
    report.errors += sum(status == "error" for status in columns[names.index("status")])
    report.vectors += len(has_vector)
    report.captions += sum(c is not None for c in caption)
    report.ocr += sum(t is not None for t in ocr_text)
    report.thumbnails += sum(t is not None for t in thumbs)
    return pa.Table.from_arrays(arrays, schema=schema)


def _read_thumbnail(root: Path, rel: str | None, sha: str | None) -> bytes | None:
    rel = rel or (thumbnail_relpath(sha) if sha else None)
    if rel is None:
        return None
    try:
        return (root / rel).read_bytes()
    except OSError:
        return None


class _PartWriter:
    """Splits a stream of tables into part files of `rows_per_file` rows, each renamed into place when complete."""

    def __init__(self, out: Path, schema: pa.Schema, rows_per_file: int) -> None:
        self.out = out
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.files: list[Path] = []
        self.writer: pq.ParquetWriter | None = None
        self.tmp: Path | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None:
                self._open()
            assert self.writer is not None
            take = min(table.num_rows, self.rows_per_file - self.rows)
            self.writer.write_table(table.slice(0, take))
            self.rows += take
            table = table.slice(take)
            if self.rows == self.rows_per_file:
                self._finish()

    def close(self) -> list[Path]:
        if self.writer is None and not self.files:
            self._open()  # an empty library still gets one (empty) part: readers then see the columns
        if self.writer is not None:
            self._finish()
        return self.files

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)

    def _open(self) -> None:
        name = PART_NAME.format(len(self.files))
        self.tmp = self.out / f".{name}.{os.getpid()}.tmp"
        self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.rows = 0

    def _finish(self) -> None:
        assert self.writer is not None and self.tmp is not None
        self.writer.close()
        path = self.out / PART_NAME.format(len(self.files))
        os.replace(self.tmp, path)
        self.files.append(path)
        self.writer, self.tmp, self.rows = None, None, 0
