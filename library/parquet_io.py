"""Parquet export and import of a library: one row per image, readable by DuckDB, Spark and vector databases.

An export is a folder of part files (`part-00000.parquet`, ...), streamed from SQLite so a library of any size
fits in memory; each part is written under a temporary name and renamed when complete. An import merges rows
written by an export, by distributed indexing (its shards use this format) or by another tool, upserting by path
one transaction per batch: a run that dies keeps its finished batches, and running it again changes nothing.

Format version 1 (`parquet_schema`); every column but `path` may be absent on import, meaning "unknown":
path, id, sha256, size, mtime, width, height, display_width, display_height, orientation, format, taken_at,
camera_make, camera_model, status ("ok" | "error"), error, embedding (fixed_size_list<float32>[dim]), caption,
caption_model, ocr_text, ocr_engine, thumbnail (JPEG bytes). The schema metadata key b"vlsearch" holds
{"format_version": 1, "model": ..., "dim": ...}: which model made the embeddings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import and_, false, func, insert, select
from sqlalchemy.orm import Session, selectinload

from vlsearch.library.schema import Caption, Embedding, ImageRecord, ModelRecord, OcrText, utcnow
from vlsearch.library.store import Library, LibraryError, decode_vectors, encode_vector
from vlsearch.library.thumbs import thumbnail_relpath
from vlsearch.library.vectors import VectorIndex

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_KEY = b"vlsearch"
PART_NAME = "part-{:05d}.parquet"
# Text imported without the name of the model or engine that produced it is stored under this name.
IMPORTED = "imported"
EXPORT_CHUNK_ROWS = 10_000  # rows per SQLite fetch and per row group; fewer with thumbnails (~10 KB each)
EXPORT_THUMB_CHUNK_ROWS = 1_000
MAX_THUMBNAIL_BYTES = 4 << 20  # a thumbnail is a 256 px JPEG; anything far larger is not one
MAX_REASONS = 1_000  # skipped rows listed in a report (all are counted)
# Image columns copied as they are; `size` and `mtime` are required by the schema, 0 when unknown (so the next
# `vlsearch index` of the file reads it again and fills them in).
META_COLUMNS = ("size", "mtime", "width", "height", "display_width", "display_height", "orientation", "format",
                "taken_at", "camera_make", "camera_model")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VECTOR_TOLERANCE = 1e-3  # float16 rounding: an imported vector this close to the stored one is the same vector


class ParquetError(LibraryError):
    """A Parquet file or export folder cannot be used as asked; the message names it and says what to change."""


class ProgressHook(Protocol):
    """The same hook the indexer reports to (vlsearch.indexer.pipeline.ProgressHook)."""

    def start(self, total: int) -> None: ...

    def advance(self, n: int, errors: int = 0) -> None: ...


def parquet_schema(dim: int, model: str | None = None) -> pa.Schema:
    """The columns of format version 1, with the b"vlsearch" metadata when `model` is given: what shard writers
    (distributed indexing) and other tools use to write files `import_parquet` reads."""
    schema = pa.schema([
        pa.field("path", pa.string(), nullable=False),
        pa.field("id", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("mtime", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("display_width", pa.int32()),
        pa.field("display_height", pa.int32()),
        pa.field("orientation", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("taken_at", pa.timestamp("us")),
        pa.field("camera_make", pa.string()),
        pa.field("camera_model", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("embedding", pa.list_(pa.float32(), dim)),
        pa.field("caption", pa.string()),
        pa.field("caption_model", pa.string()),
        pa.field("ocr_text", pa.string()),
        pa.field("ocr_engine", pa.string()),
        pa.field("thumbnail", pa.binary()),
    ])
    return schema.with_metadata(format_metadata(model, dim)) if model is not None else schema


def format_metadata(model: str, dim: int) -> dict[bytes, bytes]:
    return {METADATA_KEY: json.dumps({"format_version": FORMAT_VERSION, "model": model, "dim": dim}).encode()}


# -- export -----------------------------------------------------------------------------------------------------


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
        raise ParquetError(f"library {lib.root} holds no vectors yet; run `vlsearch index` first")
    dim = lib.require_model(model).dim
    caption_model = lib.caption_model()
    out = Path(out).expanduser().absolute()
    _prepare_folder(out, overwrite)
    report = ExportReport(out=out, model=model, caption_model=caption_model)
    schema = parquet_schema(dim, model)
    chunk = min(rows_per_file, EXPORT_THUMB_CHUNK_ROWS if thumbnails else EXPORT_CHUNK_ROWS)
    query = (
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
    parts = _PartWriter(out, schema, rows_per_file)
    try:
        with lib.session() as s:
            if progress:
                progress.start(s.scalar(select(func.count()).select_from(ImageRecord)) or 0)
            for rows in s.execute(query).partitions():
                parts.write(_export_table(rows, schema, dim, lib.root if thumbnails else None, report))
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


def _prepare_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ParquetError(f"{out} is a file; an export is a folder of part files: name a new folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ParquetError(f"{out} is not empty; name a new folder, or pass --overwrite to replace the "
                               "Parquet files in it")
        for old in [*out.glob("*.parquet"), *out.glob(".part-*.tmp")]:
            old.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParquetError(f"cannot create {out}: {exc.strerror or exc}") from None


def _export_table(rows: Sequence, schema: pa.Schema, dim: int, thumbs_root: Path | None,
                  report: ExportReport) -> pa.Table:
    """One chunk of SQLite rows as an Arrow table of `schema`."""
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


# -- import -----------------------------------------------------------------------------------------------------


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
    # model -> (ids whose vectors were added or changed, ids whose vectors were removed): for a caller that passed
    # update_index=False and brings FAISS up to date itself, once, with `Library.apply_to_index`
    changes: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append((where, reason))


@dataclass(frozen=True)
class _Source:
    path: Path
    rows: int
    model: str | None  # None: the file has no embeddings
    dim: int | None
    columns: list[str]


@dataclass
class _Incoming:
    """One valid row of a file: the values of the columns it has; absent ones are not keys of `meta`."""

    path: str
    sha256: str | None
    status: str | None
    error: str | None
    meta: dict[str, object]
    vector: np.ndarray | None  # L2-normalised
    caption: tuple[str, str] | None  # (model, text)
    ocr: tuple[str, str] | None  # (engine, text)
    thumbnail: bytes | None


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
    opened = _open_sources(lib, sources, model)
    dims = {s.model: s.dim for s in opened if s.model is not None and s.dim is not None}
    for name, dim in dims.items():
        lib.ensure_model(name, dim)
    report = ImportReport(models=sorted(dims))
    # Current before the import: the deltas apply to it.
    indexes = {name: lib.vector_index(name) for name in dims} if update_index else {}
    changes: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name in dims}  # upserts, removed
    report.changes = changes
    if progress:
        progress.start(sum(s.rows for s in opened))
    try:
        for source in opened:
            start = 0
            for batch in _batches(source, batch_rows):
                skipped_before = report.skipped
                rows = list(_read_batch(source, batch, start, report))
                start += batch.num_rows
                report.read += batch.num_rows
                if rows:
                    _write_batch(lib, source, rows, report, changes)
                if progress:
                    progress.advance(batch.num_rows, report.skipped - skipped_before)
    except BaseException:
        # Committed batches stay (after an interrupt, or a file that turns out unreadable halfway): bring FAISS up to
        # date with them so a search right away sees them. Failing that, the next open rebuilds the index.
        try:
            _update_indexes(lib, indexes, changes)
        except Exception as exc:
            log.warning("the FAISS index is rebuilt when next used: %s", exc)
        raise
    _update_indexes(lib, indexes, changes)
    report.seconds = time.perf_counter() - started
    log.info("imported %d rows into %s: %d added, %d updated, %d unchanged, %d skipped in %.1fs", report.read,
             lib.root, report.added, report.updated, report.unchanged, report.skipped, report.seconds)
    return report


def _update_indexes(lib: Library, indexes: dict[str, VectorIndex],
                    changes: dict[str, tuple[list[int], list[int]]]) -> None:
    for name, index in indexes.items():
        upserts, removed = changes.get(name, ([], []))
        if upserts or removed:
            lib.apply_to_index(name, index, upserts, removed)


def _batches(source: _Source, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The file's record batches, one at a time; a file damaged past its footer is an error naming it."""
    try:
        with pq.ParquetFile(source.path) as file:
            yield from file.iter_batches(batch_size=batch_rows, columns=source.columns)
    except (pa.ArrowException, OSError) as exc:
        raise ParquetError(f"{source.path} is damaged: {exc} (the rows read before that are imported)") from None


def parquet_files(sources: Sequence[Path]) -> list[Path]:
    """The files named, and the *.parquet files of the folders named (in name order; hidden ones left out)."""
    files: list[Path] = []
    for source in map(Path, sources):
        source = source.expanduser()
        if source.is_dir():
            found = sorted(p for p in source.glob("*.parquet") if not p.name.startswith((".", "_")) and p.is_file())
            if not found:
                raise ParquetError(f"{source}: no .parquet files in this folder")
            files += found
        elif source.is_file():
            files.append(source)
        else:
            raise ParquetError(f"{source}: no such file or folder")
    return files


def _open_sources(lib: Library, sources: Sequence[Path], model: str | None) -> list[_Source]:
    """Open and check every file, so a wrong one is reported before anything is written."""
    opened: list[_Source] = []
    dims: dict[str, tuple[int, Path]] = {}
    with lib.session() as s:
        recorded = {m.name: m.dim for m in s.scalars(select(ModelRecord))}
    for path in parquet_files(sources):
        try:
            with pq.ParquetFile(path) as file:
                opened.append(_check_source(lib, path, file, model, recorded, dims))
        except (pa.ArrowException, OSError) as exc:
            raise ParquetError(f"{path}: not a readable Parquet file ({exc})") from None
    return opened


def _check_source(lib: Library, path: Path, file: pq.ParquetFile, model: str | None, recorded: dict[str, int],
                  dims: dict[str, tuple[int, Path]]) -> _Source:
    schema = file.schema_arrow
    if "path" not in schema.names:
        raise ParquetError(f"{path}: no `path` column; every row needs the path or URL of its image")
    meta_model, meta_dim = _read_metadata(path, schema)
    columns = [name for name in parquet_schema(1).names if name in schema.names and name != "id"]
    name = dim = None
    if "embedding" in schema.names:
        if model is not None and meta_model is not None and model != meta_model:
            raise ParquetError(f"{path} holds vectors of {meta_model!r}, not {model!r}; leave out --model to "
                               f"import them as {meta_model!r}")
        name = meta_model or model
        if name is None:
            raise ParquetError(f"{path}: no vlsearch metadata says which model made its embeddings; name it "
                               "(--model NAME)")
        dim = _embedding_dim(path, file, meta_dim, recorded.get(name))
        if name in recorded and recorded[name] != dim:
            raise ParquetError(f"{path}: its {name!r} embeddings have {dim} dimensions, but the library "
                               f"{lib.root} holds {name!r} vectors of dimension {recorded[name]}")
        if name in dims and dims[name][0] != dim:
            raise ParquetError(f"{path}: its {name!r} embeddings have {dim} dimensions, but those of "
                               f"{dims[name][1]} have {dims[name][0]}")
        dims[name] = (dim, path)
    return _Source(path, file.metadata.num_rows, name, dim, columns)


def _read_metadata(path: Path, schema: pa.Schema) -> tuple[str | None, int | None]:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None, None
    try:
        meta = json.loads(raw)
        version, model, dim = meta.get("format_version"), meta.get("model"), meta.get("dim")
    except (ValueError, AttributeError):
        raise ParquetError(f"{path}: its vlsearch metadata is not a JSON object") from None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ParquetError(f"{path} is in format version {version!r}; this vlsearch reads version {FORMAT_VERSION} "
                           "(upgrade vlsearch)")
    if model is not None and (not isinstance(model, str) or not model or len(model) > 256):
        raise ParquetError(f"{path}: its metadata names no usable model ({model!r})")
    if dim is not None and (not isinstance(dim, int) or dim < 1):
        raise ParquetError(f"{path}: its metadata gives no usable dimension ({dim!r})")
    return model, dim


def _embedding_dim(path: Path, file: pq.ParquetFile, meta_dim: int | None, recorded: int | None) -> int:
    """The dimension of a file's embeddings: from its metadata and column type, which must agree; for lists of any
    length without metadata, the library's for that model, else the length of the first embedding."""
    kind = file.schema_arrow.field("embedding").type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) \
            or not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise ParquetError(f"{path}: the embedding column is {kind}; it must be a list of floats")
    fixed = kind.list_size if pa.types.is_fixed_size_list(kind) else None
    if fixed is not None and meta_dim is not None and fixed != meta_dim:
        raise ParquetError(f"{path}: its metadata says {meta_dim} dimensions, its embedding column holds {fixed}")
    dim = fixed or meta_dim or recorded
    if dim is None:
        for batch in file.iter_batches(batch_size=1024, columns=["embedding"]):
            lengths = pc.drop_null(pc.list_value_length(batch.column(0)))
            if len(lengths):
                dim = lengths[0].as_py()
                break
    if not dim:
        raise ParquetError(f"{path}: no embedding in it says how many dimensions its model has")
    return dim


def _read_batch(source: _Source, batch: pa.RecordBatch, start: int, report: ImportReport) -> Iterator[_Incoming]:
    """The valid rows of a batch; the others are counted and reported as skipped."""
    schema = parquet_schema(source.dim or 1)
    values: dict[str, list] = {}
    for name in source.columns:
        if name == "embedding":
            continue
        column = batch.column(name)
        try:
            values[name] = column.cast(schema.field(name).type).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ParquetError(f"{source.path}: column {name} is {column.type}, which cannot be read as "
                               f"{schema.field(name).type} ({exc})") from None
    vectors = _vectors(batch.column("embedding")) if "embedding" in source.columns else None
    for i in range(batch.num_rows):
        path = values["path"][i]
        where = path or f"{source.path} row {start + i}"
        row = {name: column[i] for name, column in values.items()}
        reason = _invalid(row)
        vector = None
        if reason is None and vectors is not None and vectors[i] is not None and row.get("status") != "error":
            vector, reason = _normalised(vectors[i], source)
        if reason is not None:
            report.skip(where, reason)
            continue
        sha = row.get("sha256")
        caption = row.get("caption")
        ocr_text = row.get("ocr_text")
        yield _Incoming(
            path=path, sha256=sha.lower() if sha else None, status=row.get("status"), error=row.get("error"),
            meta={name: row[name] for name in META_COLUMNS if name in row}, vector=vector,
            caption=(row.get("caption_model") or IMPORTED, caption) if caption is not None else None,
            ocr=(row.get("ocr_engine") or IMPORTED, ocr_text) if ocr_text is not None else None,
            thumbnail=row.get("thumbnail"),
        )


def _vectors(column: pa.Array) -> list[np.ndarray | None]:
    """Each row's embedding as float64 (nulls inside a list become NaN), or None where it has none."""
    lengths = pc.list_value_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
    flat = column.flatten().cast(pa.float64()).to_numpy(zero_copy_only=False)
    out: list[np.ndarray | None] = []
    offset = 0
    for length in lengths:
        if length < 0:
            out.append(None)
        else:
            out.append(flat[offset : offset + length])
            offset += length
    return out


def _invalid(row: dict[str, object]) -> str | None:
    path = row["path"]
    if not path or not str(path).strip():
        return "empty path"
    if "\x00" in str(path):
        return "the path contains a NUL character"
    status = row.get("status")
    if status is not None and status not in ("ok", "error"):
        return f"status {status!r} is neither 'ok' nor 'error'"
    sha = row.get("sha256")
    if sha is not None and not _SHA256.fullmatch(str(sha).lower()):
        return "sha256 is not 64 hexadecimal digits"
    return None


def _normalised(vector: np.ndarray, source: _Source) -> tuple[np.ndarray | None, str | None]:
    if len(vector) != source.dim:
        return None, f"the embedding has {len(vector)} values; {source.model} vectors have {source.dim}"
    if not np.isfinite(vector).all():
        return None, "the embedding holds NaN, infinite or missing values"
    norm = float(np.linalg.norm(vector))
    if norm < 1e-12 or not np.isfinite(norm):
        return None, "the embedding is all zeros (or too close to it to normalise)"
    return (vector / norm).astype(np.float32), None


def _write_batch(lib: Library, source: _Source, rows: list[_Incoming], report: ImportReport,
                 changes: dict[str, tuple[list[int], list[int]]]) -> None:
    """One transaction: upsert the batch's rows, their vectors, text and thumbnails, and bump the generation of
    every model whose vectors changed. The FAISS ids go into `changes` before the commit (an id recorded for a
    batch that then fails to commit is harmless: FAISS is updated from SQLite)."""
    with lib.session() as s:
        known = {r.path: r for paths in _chunks(list({r.path for r in rows})) for r in s.scalars(
            select(ImageRecord).where(ImageRecord.path.in_(paths)).options(selectinload(ImageRecord.embeddings))
        )}
        touched: set[str] = set()
        seen = Counter(r.path for r in rows)
        new = [r for r in rows if r.path not in known and seen[r.path] == 1]
        if new:
            _insert_new(lib, s, source.model, new, touched, changes, report)
        rest = [r for r in rows if r.path in known or seen[r.path] > 1]
        captions: dict[int, dict[str, Caption]] = {}
        ocr: dict[int, OcrText] = {}
        for ids in _chunks([r.id for r in known.values()]):
            for caption in s.scalars(select(Caption).where(Caption.image_id.in_(ids))):
                captions.setdefault(caption.image_id, {})[caption.model] = caption
            ocr.update((o.image_id, o) for o in s.scalars(select(OcrText).where(OcrText.image_id.in_(ids))))
        fresh = {path: ImageRecord(path=path, size=0, mtime=0.0, status="ok", embeddings=[])
                 for path in dict.fromkeys(r.path for r in rest if r.path not in known)}
        s.add_all(fresh.values())
        s.flush()
        known.update(fresh)
        for incoming in rest:
            changed = _upsert(lib, s, known[incoming.path], incoming, source.model, captions, ocr, touched, changes,
                              report)
            if fresh.pop(incoming.path, None) is not None:
                report.added += 1
            elif changed:
                report.updated += 1
            else:
                report.unchanged += 1
        for name in touched:
            Library.bump_generation(s, name)


def _chunks(items: list, size: int = 10_000) -> Iterator[list]:
    """Slices short enough for one IN (...) (SQLite allows 32,766 parameters a statement)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_new(lib: Library, s: Session, model: str | None, rows: list[_Incoming], touched: set[str],
                changes: dict[str, tuple[list[int], list[int]]], report: ImportReport) -> None:
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
            "thumbnail": _place_thumbnail(lib.root, r, report),
        })
    ids = s.scalars(insert(ImageRecord).returning(ImageRecord.id, sort_by_parameter_order=True), values).all()
    vectors, captions, ocr = [], [], []
    for image_id, r in zip(ids, rows, strict=True):
        if r.status == "error":
            continue
        if r.vector is not None and model is not None:
            vectors.append({"image_id": image_id, "model": model, "vector": encode_vector(r.vector)})
            if model in changes:
                changes[model][0].append(image_id)
        if r.caption is not None:
            captions.append({"image_id": image_id, "model": r.caption[0], "text": r.caption[1], "created_at": now})
        if r.ocr is not None:
            ocr.append({"image_id": image_id, "engine": r.ocr[0], "text": r.ocr[1], "created_at": now})
    for table, rows_of in ((Embedding, vectors), (Caption, captions), (OcrText, ocr)):
        if rows_of:
            s.execute(insert(table), rows_of)
    if vectors:
        touched.add(model)
    report.added += len(rows)


def _upsert(lib: Library, s: Session, row: ImageRecord, incoming: _Incoming, model: str | None,
            captions: dict[int, dict[str, Caption]], ocr: dict[int, OcrText], touched: set[str],
            changes: dict[str, tuple[list[int], list[int]]], report: ImportReport) -> bool:
    """Bring one row to what the file says of it; whether anything changed."""
    changed = False

    def assign(name: str, value: object) -> None:
        nonlocal changed
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True

    def drop_vector(embedding: Embedding) -> None:
        nonlocal changed
        row.embeddings.remove(embedding)
        touched.add(embedding.model)
        if embedding.model in changes:
            changes[embedding.model][1].append(row.id)
        changed = True

    replaced = incoming.sha256 is not None and row.sha256 != incoming.sha256
    if replaced:
        # Another file now lives at this path: what was known of the old one goes, what is unknown of the new one
        # stays unknown (the next `vlsearch index` of the file fills it in).
        for embedding in [e for e in row.embeddings if e.model != model or incoming.vector is None]:
            drop_vector(embedding)
        for caption in captions.pop(row.id, {}).values():
            s.delete(caption)
        if row.id in ocr:
            s.delete(ocr.pop(row.id))
        assign("sha256", incoming.sha256)
        for name in META_COLUMNS:
            assign(name, incoming.meta.get(name, 0 if name in ("size", "mtime") else None))
        assign("thumbnail", None)
    else:
        for name, value in incoming.meta.items():
            assign(name, value if value is not None or name not in ("size", "mtime") else getattr(row, name))
    if incoming.status == "error":
        assign("status", "error")
        assign("error", incoming.error)
        for embedding in list(row.embeddings):
            drop_vector(embedding)
    elif incoming.status == "ok" or incoming.vector is not None:
        assign("status", "ok")
        assign("error", None)
    if incoming.vector is not None and model is not None and _set_vector(row, model, incoming.vector):
        touched.add(model)
        if model in changes:
            changes[model][0].append(row.id)
        changed = True
    if incoming.caption is not None and incoming.status != "error":
        name, text = incoming.caption
        caption = captions.setdefault(row.id, {}).get(name)
        if caption is None:
            captions[row.id][name] = caption = Caption(image_id=row.id, model=name, text=text)
            s.add(caption)
            changed = True
        elif caption.text != text:
            caption.text, caption.created_at = text, utcnow()
            changed = True
    if incoming.ocr is not None and incoming.status != "error":
        engine, text = incoming.ocr
        read = ocr.get(row.id)
        if read is None:
            ocr[row.id] = OcrText(image_id=row.id, engine=engine, text=text)
            s.add(ocr[row.id])
            changed = True
        elif (read.engine, read.text) != (engine, text):
            read.engine, read.text, read.created_at = engine, text, utcnow()
            changed = True
    rel = _place_thumbnail(lib.root, incoming, report) if incoming.sha256 else None
    if rel is not None:
        assign("thumbnail", rel)
    if changed:
        row.indexed_at = utcnow()
    return changed


def _set_vector(row: ImageRecord, model: str, vector: np.ndarray) -> bool:
    """Store `model`'s vector of a row unless it holds that vector already (to float16 precision): whether it
    changed."""
    current = next((e for e in row.embeddings if e.model == model), None)
    if current is None:
        row.embeddings.append(Embedding(model=model, vector=encode_vector(vector)))
        return True
    if np.abs(decode_vectors([current.vector], len(vector))[0] - vector).max() <= _VECTOR_TOLERANCE:
        return False
    current.vector = encode_vector(vector)
    return True


def _place_thumbnail(root: Path, incoming: _Incoming, report: ImportReport) -> str | None:
    """The thumbnail of a row's content, written from the file's bytes if it is not there yet (thumbnails are named
    by content hash, so identical files share one); None when there is none."""
    if incoming.sha256 is None:
        return None
    rel = thumbnail_relpath(incoming.sha256)
    path = root / rel
    if path.exists():
        return rel
    data = incoming.thumbnail
    if not data:
        return None
    if len(data) > MAX_THUMBNAIL_BYTES or not data.startswith(b"\xff\xd8\xff"):
        log.warning("%s: its thumbnail is not a JPEG of at most %d bytes; not written", incoming.path,
                    MAX_THUMBNAIL_BYTES)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    report.thumbnails += 1
    return rel
