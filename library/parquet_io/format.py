"""Format version 1 of a library as Parquet: its columns, its b"vlsearch" metadata, and the error every part of the
export and import raises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from vlsearch.library.errors import LibraryError

FORMAT_VERSION = 1
METADATA_KEY = b"vlsearch"
# Text imported without the name of the model or engine that produced it is stored under this name.
IMPORTED = "imported"
# Image columns copied as they are; `size` and `mtime` are required by the schema, 0 when unknown (so the next
# `vlsearch index` of the file reads it again and fills them in).
META_COLUMNS = ("size", "mtime", "width", "height", "display_width", "display_height", "orientation", "format",
                "taken_at", "camera_make", "camera_model")


class ParquetError(LibraryError):
    """A Parquet file or export folder cannot be used as asked; the message names it and says why."""


class FolderNotEmpty(ParquetError):
    """An export into a folder that holds files, without leave to replace its Parquet files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        super().__init__(f"{folder} is not empty; name a new folder, or let the export replace its Parquet files")

    def __reduce__(self):
        return type(self), (self.folder,)


class ModelUnnamed(ParquetError):
    """A file with embeddings and no word of the model that made them: the importer must name it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path}: no vlsearch metadata says which model made its embeddings; name the model")

    def __reduce__(self):
        return type(self), (self.path,)


class ModelConflict(ParquetError):
    """A file whose metadata says its vectors are `recorded`'s, imported as `named`'s."""

    def __init__(self, path: Path, recorded: str, named: str) -> None:
        self.path, self.recorded, self.named = path, recorded, named
        super().__init__(f"{path} holds vectors of {recorded!r}, not {named!r}")

    def __reduce__(self):
        return type(self), (self.path, self.recorded, self.named)


class ProgressHook(Protocol):
    """The start/advance part of the indexer's progress hook (the library may not import the indexer)."""

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
        pa.field("tags", pa.list_(pa.string())),  # best first; derived: an import tags with its own vocabularies
        pa.field("thumbnail", pa.binary()),
    ])
    return schema.with_metadata(format_metadata(model, dim)) if model is not None else schema


def format_metadata(model: str, dim: int) -> dict[bytes, bytes]:
    return {METADATA_KEY: json.dumps({"format_version": FORMAT_VERSION, "model": model, "dim": dim}).encode()}


def read_metadata(path: Path, schema: pa.Schema) -> tuple[str | None, int | None]:
    """The model and dimension a file's b"vlsearch" metadata names (None for what it leaves out, or without it)."""
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
