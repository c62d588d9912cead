"""Parquet export and import of a library: one row per image, readable by DuckDB, Spark and vector databases.

An export (`export.py`) is a folder of part files (`part-00000.parquet`, ...). An import (`merge.py`) merges rows
written by an export, by distributed indexing (its shards use this format) or by another tool: every file is found
and checked first (`sources.py`), then its rows are upserted by path a batch at a time (`upsert.py`).

Format version 1 (`format.py`); every column but `path` may be absent on import, meaning "unknown":
path, id, sha256, size, mtime, width, height, display_width, display_height, orientation, format, taken_at,
camera_make, camera_model, status ("ok" | "error"), error, embedding (fixed_size_list<float32>[dim]), caption,
caption_model, ocr_text, ocr_engine, tags (labels, best first; not read back: an importing library tags with its
own vocabularies), thumbnail (JPEG bytes). The schema metadata key b"vlsearch" holds {"format_version": 1,
"model": ..., "dim": ...}: which model made the embeddings.
"""

from vlsearch.library.parquet_io.export import ExportReport, export_parquet
from vlsearch.library.parquet_io.format import FORMAT_VERSION, ParquetError, format_metadata, parquet_schema
from vlsearch.library.parquet_io.merge import import_parquet
from vlsearch.library.parquet_io.sources import parquet_files
from vlsearch.library.parquet_io.upsert import ImportReport

__all__ = [
    "FORMAT_VERSION",
    "ExportReport",
    "ImportReport",
    "ParquetError",
    "export_parquet",
    "format_metadata",
    "import_parquet",
    "parquet_files",
    "parquet_schema",
]
