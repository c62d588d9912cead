"""Where images come from: files, http(s) URLs, and lists of either in a Parquet or CSV file."""

from __future__ import annotations

import csv
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vlsearch.images import DecodeError, read_image_file

URL_SCHEMES = ("http://", "https://")
URL_TIMEOUT_S = 30
URL_MAX_BYTES = 256 * 1024 * 1024


class SourceListError(ValueError):
    """A list of files or URLs that cannot be read; the message names it."""


def is_url(path: str) -> bool:
    return path.startswith(URL_SCHEMES)


def read_source(path: str, confine_to: list[Path] | None = None) -> bytes:
    """The bytes of a file (read safely, see images.read_image_file) or of an http(s) URL."""
    if not is_url(path):
        return read_image_file(path, confine_to)
    request = urllib.request.Request(path, headers={"User-Agent": "vlsearch"})
    with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:  # noqa: S310 (schemes checked)
        data = response.read(URL_MAX_BYTES + 1)
    if len(data) > URL_MAX_BYTES:
        raise DecodeError(f"more than {URL_MAX_BYTES // 2**20} MB: not fetched")
    return data


def read_failure(exc: Exception) -> str:
    """Why a source could not be read, as stored with its row."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"cannot fetch: HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot fetch: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return f"cannot fetch: no answer in {URL_TIMEOUT_S} s"
    if isinstance(exc, OSError):
        return f"cannot read file: {exc.strerror or exc}"
    return str(exc)


def read_source_list(path: Path) -> list[str]:
    """The files or URLs listed in a Parquet or CSV file: its `path` or `url` column, else its first column. Files
    come back as absolute paths, URLs as they are."""
    try:
        values = _parquet_column(path) if path.suffix.lower() == ".parquet" else _csv_column(path)
    except (OSError, pa.ArrowException, UnicodeDecodeError, csv.Error) as exc:
        raise SourceListError(f"cannot read the list {path}: {exc}") from None
    out = []
    for value in values:
        value = (value or "").strip() if isinstance(value, str) else ""
        if value:
            out.append(value if is_url(value) else str(Path(value).expanduser().resolve()))
    return out


def _parquet_column(path: Path) -> list:
    table = pq.read_table(path)
    names = table.column_names
    column = next((c for c in ("path", "url") if c in names), names[0] if names else None)
    if column is None:
        raise SourceListError(f"{path}: no columns")
    return table.column(column).to_pylist()


def _csv_column(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(c) for c in ("path", "url") if c in header), None)
    if column is None:  # no header naming the column: the first column, first row included
        column, body = 0, rows
    else:
        body = rows[1:]
    return [row[column] if len(row) > column else "" for row in body]
