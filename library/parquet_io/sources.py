"""The files an import reads: found, opened and checked before anything is written, then read batch by batch into
rows that are valid (the others are skipped with a reason)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import select

from vlsearch.library.parquet_io.format import (
    IMPORTED,
    META_COLUMNS,
    ModelConflict,
    ModelUnnamed,
    ParquetError,
    parquet_schema,
    read_metadata,
)
from vlsearch.library.schema import ModelRecord
from vlsearch.library.store import Library

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Source:
    path: Path
    rows: int
    model: str | None  # None: the file has no embeddings
    dim: int | None
    columns: list[str]


@dataclass
class Incoming:
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


def open_sources(lib: Library, sources: Sequence[Path], model: str | None) -> list[Source]:
    """Open and check every file, so a wrong one is reported before anything is written."""
    opened: list[Source] = []
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
                  dims: dict[str, tuple[int, Path]]) -> Source:
    schema = file.schema_arrow
    if "path" not in schema.names:
        raise ParquetError(f"{path}: no `path` column; every row needs the path or URL of its image")
    meta_model, meta_dim = read_metadata(path, schema)
    columns = [name for name in parquet_schema(1).names if name in schema.names and name not in ("id", "tags")]
    name = dim = None
    if "embedding" in schema.names:
        if model is not None and meta_model is not None and model != meta_model:
            raise ModelConflict(path, meta_model, model)
        name = meta_model or model
        if name is None:
            raise ModelUnnamed(path)
        dim = _embedding_dim(path, file, meta_dim, recorded.get(name))
        if name in recorded and recorded[name] != dim:
            raise ParquetError(f"{path}: its {name!r} embeddings have {dim} dimensions, but the library "
                               f"{lib.root} holds {name!r} vectors of dimension {recorded[name]}")
        if name in dims and dims[name][0] != dim:
            raise ParquetError(f"{path}: its {name!r} embeddings have {dim} dimensions, but those of "
                               f"{dims[name][1]} have {dims[name][0]}")
        dims[name] = (dim, path)
    return Source(path, file.metadata.num_rows, name, dim, columns)


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


def batches(source: Source, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The file's record batches, one at a time; a file damaged past its footer is an error naming it."""
    try:
        with pq.ParquetFile(source.path) as file:
            yield from file.iter_batches(batch_size=batch_rows, columns=source.columns)
    except (pa.ArrowException, OSError) as exc:
        raise ParquetError(f"{source.path} is damaged: {exc} (the rows read before that are imported)") from None


def read_batch(source: Source, batch: pa.RecordBatch, start: int,
               skip: Callable[[str, str], None]) -> Iterator[Incoming]:
    """The valid rows of a batch; each of the others goes to `skip` (its path, or file and row; why)."""
    values = _column_values(source, batch)
    vectors = _vectors(batch.column("embedding")) if "embedding" in source.columns else None
    for i in range(batch.num_rows):
        path = values["path"][i]
        row = {name: column[i] for name, column in values.items()}
        reason = _invalid(row)
        vector = None
        if reason is None and vectors is not None and vectors[i] is not None and row.get("status") != "error":
            vector, reason = _normalised(vectors[i], source)
        if reason is not None:
            skip(path or f"{source.path} row {start + i}", reason)
            continue
        sha = row.get("sha256")
        caption = row.get("caption")
        ocr_text = row.get("ocr_text")
        yield Incoming(
            path=path, sha256=sha.lower() if sha else None, status=row.get("status"), error=row.get("error"),
            meta={name: row[name] for name in META_COLUMNS if name in row}, vector=vector,
            caption=(row.get("caption_model") or IMPORTED, caption) if caption is not None else None,
            ocr=(row.get("ocr_engine") or IMPORTED, ocr_text) if ocr_text is not None else None,
            thumbnail=row.get("thumbnail"),
        )


def _column_values(source: Source, batch: pa.RecordBatch) -> dict[str, list]:
    """Every column but the embedding as Python values of the format's types; a column that cannot be read as
    its type is an error naming the file."""
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
    return values


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


def _normalised(vector: np.ndarray, source: Source) -> tuple[np.ndarray | None, str | None]:
    if len(vector) != source.dim:
        return None, f"the embedding has {len(vector)} values; {source.model} vectors have {source.dim}"
    if not np.isfinite(vector).all():
        return None, "the embedding holds NaN, infinite or missing values"
    norm = float(np.linalg.norm(vector))
    if norm < 1e-12 or not np.isfinite(norm):
        return None, "the embedding is all zeros (or too close to it to normalise)"
    return (vector / norm).astype(np.float32), None
