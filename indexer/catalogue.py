"""A shop's product catalogue (CSV, JSON Lines or Parquet) for reverse image search, read one row at a time: an
export of a million products must never sit in memory, and one bad row must not stop an import, so each row comes
back as a product or as a problem that names its line."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("csv", "jsonl", "parquet")
FIELDS = ("product_id", "title", "description", "brand", "category", "price", "currency", "url")
TEXT_FIELDS = ("title", "description", "brand", "category", "url")
MAX_ID_CHARS = 256
PARQUET_BATCH_ROWS = 4096

_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
             ".parquet": "parquet", ".pq": "parquet"}
_IMAGE_COLUMN = re.compile(r"images?|image_.+|image\d+")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_PLAIN_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")
_GROUPED_NUMBER = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d*)?")  # commas only as thousands separators: 1,299.50
_CURRENCY = re.compile(r"[A-Za-z]{3}")

Value = str | float | int | bool


@dataclass(frozen=True)
class ProductRow:
    """One product: `line` is where it is in the file (CSV: the line its record starts on, the header being line 1;
    JSON Lines: its line; Parquet: its row, the first being 1), so a shop can find and fix it."""

    line: int
    product_id: str
    title: str | None = None
    description: str | None = None
    brand: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    url: str | None = None
    images: tuple[str, ...] = ()
    attributes: dict[str, Value] = field(default_factory=dict)


@dataclass(frozen=True)
class RowProblem:
    """A row that is not a product, and why: the import skips it and reports it rather than stopping."""

    line: int
    message: str


class CatalogueError(ValueError):
    """A catalogue that cannot be read as a whole (its format, its columns, its bytes); the message says why."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"catalogue {path} {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)


class _RowFault(Exception):
    """What is wrong with one value of a row; it becomes (part of) a RowProblem."""


def catalogue_format(path: Path, format: str | None = None) -> str:
    """The format named by `format`, else the one the file's suffix says."""
    kind = format.strip().lower() if format is not None else _SUFFIXES.get(path.suffix.lower())
    if kind not in FORMATS:
        reason = (f"{format!r} is no known format" if format is not None
                  else f"its suffix {path.suffix!r} names no known format" if path.suffix
                  else "it has no suffix to tell its format")
        known = ", ".join(f"{kind} ({' '.join(s for s in _SUFFIXES if _SUFFIXES[s] == kind)})" for kind in FORMATS)
        raise CatalogueError(path, f"cannot be read: {reason}; the known formats are {known}")
    return kind


def read_catalogue(path: Path, format: str | None = None) -> Iterator[ProductRow | RowProblem]:
    """The catalogue's rows in file order, read as they are iterated. An unknown format raises CatalogueError at
    once; a file that cannot be read raises it when iterated (after the rows before a broken part, if any)."""
    path = Path(path)
    kind = catalogue_format(path, format)
    folder = path.parent.resolve()
    if kind == "parquet":
        return _parquet_rows(path, folder)
    if kind == "jsonl":
        return _jsonl_rows(path, folder)
    return _csv_rows(path, folder, tabs=path.suffix.lower() == ".tsv")


@contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except UnicodeDecodeError as exc:
        raise CatalogueError(path, f"is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except pa.ArrowException as exc:
        raise CatalogueError(path, f"is not a readable Parquet file ({exc})") from None
    except OSError as exc:
        raise CatalogueError(path, f"cannot be read ({exc.strerror or exc})") from None
    except csv.Error as exc:
        raise CatalogueError(path, f"is not valid CSV ({exc})") from None


def _require_product_id(path: Path, columns: list[str]) -> None:
    if "product_id" not in map(_column_key, columns):
        found = f"its columns are {', '.join(map(repr, columns))}" if columns else "it has no columns (is it empty?)"
        raise CatalogueError(path, f"has no product_id column; {found}")


def _csv_rows(path: Path, folder: Path, tabs: bool) -> Iterator[ProductRow | RowProblem]:
    """Blank lines (and rows of blank cells, as spreadsheets export) are skipped."""
    with _read_errors(path), open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        f.seek(0)
        tabs = tabs or ("\t" in first and "," not in first)
        reader = csv.reader(f, delimiter="\t" if tabs else ",")
        header = next(reader, [])
        _require_product_id(path, header)
        start = reader.line_num + 1
        for cells in reader:
            if len(cells) > len(header):
                yield RowProblem(start, f"{len(cells)} cells but the header has {len(header)} columns")
            elif any(cell.strip() for cell in cells):
                yield _row(start, zip(header, cells, strict=False), folder)  # fewer cells: absent
            start = reader.line_num + 1


def _jsonl_rows(path: Path, folder: Path) -> Iterator[ProductRow | RowProblem]:
    with _read_errors(path), open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, 1):
            if line == 1 and text.lstrip().startswith("["):
                raise CatalogueError(path, "holds a JSON array; a catalogue is JSON Lines, one object per line")
            if text.strip():
                yield _jsonl_row(line, text, folder)


def _jsonl_row(line: int, text: str, folder: Path) -> ProductRow | RowProblem:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return RowProblem(line, f"not a JSON object: {exc.msg} at column {exc.colno}")
    if not isinstance(record, dict):
        kind = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}.get(type(record))
        return RowProblem(line, f"not a JSON object: {kind or 'a number'}")
    return _row(line, record.items(), folder)


def _parquet_rows(path: Path, folder: Path) -> Iterator[ProductRow | RowProblem]:
    with _read_errors(path), pq.ParquetFile(path) as parquet:
        names = parquet.schema_arrow.names
        _require_product_id(path, names)
        line = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for values in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                line += 1
                yield _row(line, zip(names, values, strict=True), folder)


def _column_key(name: str) -> str:
    return name.strip().lower()


def _absent(value: object) -> bool:
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):
        return math.isnan(value)  # how pandas writes a missing value
    return value is None or (isinstance(value, list | dict) and not value)


def _row(line: int, cells: Iterable[tuple[str, object]], folder: Path) -> ProductRow | RowProblem:
    """A product from (column name, value) pairs in file order; the first value of a repeated column wins."""
    fields: dict[str, object] = {}
    images: list[object] = []
    attributes: dict[str, Value] = {}
    for name, value in cells:
        key = _column_key(name)
        if not key or _absent(value):  # a column with no name is a spreadsheet's row numbers, not an attribute
            continue
        if key in FIELDS:
            fields.setdefault(key, value)
        elif _IMAGE_COLUMN.fullmatch(key):
            images.extend(_image_values(value))
        elif (attribute := _attribute(value)) is not None:
            attributes.setdefault(key, attribute)
    return _product(line, fields, images, attributes, folder)


def _product(line: int, fields: dict[str, object], images: list[object], attributes: dict[str, Value],
             folder: Path) -> ProductRow | RowProblem:
    """Every problem of the row in one message, so a shop fixes a row once."""
    problems: list[str] = []

    def checked(parse: Callable[[object], Any], value: object) -> Any:
        try:
            return parse(value)
        except _RowFault as fault:
            problems.append(str(fault))

    product_id = checked(_product_id, fields.get("product_id"))
    texts = {name: checked(lambda value, name=name: _text(name, value), fields.get(name)) for name in TEXT_FIELDS}
    price = checked(_price, fields.get("price"))
    currency = checked(_currency, fields.get("currency"))
    paths = [checked(lambda value: _image(value, folder), value) for value in images]
    if problems:
        return RowProblem(line, "; ".join(problems))
    return ProductRow(line, product_id, price=price, currency=currency, images=tuple(dict.fromkeys(paths)),
                      attributes=attributes, **texts)


def _attribute(value: object) -> Value | None:
    """Typed values stay typed (CSV gives only text); lists and objects become JSON text; non-finite floats go."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)  # dates, decimals: as they print


def _text(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | dict):
        raise _RowFault(f"{name} is a list or an object, not text")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an id column with gaps comes out of pandas as floats: 12.0 is 12
    return str(value).strip()


def _product_id(value: object) -> str:
    product_id = _text("product_id", value)
    if product_id is None:
        raise _RowFault("no product_id")
    if len(product_id) > MAX_ID_CHARS:
        raise _RowFault(f"product_id is {len(product_id)} characters long; at most {MAX_ID_CHARS} are allowed")
    return product_id


def _price(value: object) -> float | None:
    """A price as written, without guessing: 1,299.50 has thousands commas, but 19,99 could be either, so it is
    refused, as is a currency symbol."""
    if value is None:
        return None
    shown = repr(value.strip()) if isinstance(value, str) else str(value)
    if isinstance(value, str):
        if not (_PLAIN_NUMBER.fullmatch(value.strip()) or _GROUPED_NUMBER.fullmatch(value.strip())):
            hint = " (use a dot for decimals)" if "," in value else ""
            raise _RowFault(f"price {shown} is not a number{hint}")
        number = float(value.replace(",", ""))
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        number = float(value)
    else:
        raise _RowFault(f"price {shown} is not a number")
    if not math.isfinite(number):
        raise _RowFault(f"price {shown} is not a finite number")
    if number < 0:
        raise _RowFault(f"price {shown} is negative")
    return number


def _currency(value: object) -> str | None:
    if value is None:
        return None
    shown = value.strip() if isinstance(value, str) else value
    if not isinstance(shown, str) or not _CURRENCY.fullmatch(shown):
        raise _RowFault(f"currency {shown!r} is not a 3-letter code")
    return shown.upper()


def _image_values(value: object) -> list[object]:
    """The images of one cell: a string holds one or more, separated by |; a list holds strings."""
    out: list[object] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            out.extend(part.strip() for part in item.split("|") if part.strip())
        elif not _absent(item):
            out.append(item)
    return out


def _image(value: object, folder: Path) -> str:
    """An http(s) URL as it is, else a file path made absolute against the catalogue's folder, so a catalogue and
    its photos can be moved together. A one-letter scheme is a Windows drive (C:\\x.jpg), so a path."""
    scheme = _SCHEME.match(value) if isinstance(value, str) else None
    if scheme and scheme[1].lower() in ("http", "https"):
        return value
    if not isinstance(value, str) or (scheme and len(scheme[1]) > 1):
        raise _RowFault(f"image {value!r} is neither an http(s) URL nor a file path")
    try:
        image = folder / Path(value).expanduser()
    except RuntimeError:  # ~name with no such user: a file whose name starts with ~
        image = folder / value
    if image.name in ("", ".."):
        return str(image.resolve())
    full = os.path.join(_real_folder(str(image.parent)), image.name)
    return os.path.realpath(full) if os.path.islink(full) else full


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    """A folder's real path, once per folder: a catalogue's pictures share a few, and resolving each picture's
    path in full was a fifth of an import's time (bench products)."""
    return os.path.realpath(folder)
