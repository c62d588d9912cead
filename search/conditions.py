"""Conditions on products (`category=shoes`, `price<100`, `color=red|blue`), as written in a CLI `--where` or an API
`where`, and the SQL that admits the images of the products meeting them all.

Text compares case-insensitively; numbers (the price, and attributes the catalogue gave as numbers) numerically;
`a|b|c` is any of the values. A condition on a field a product lacks is not met (`!=` included)."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from sqlalchemy import Select, and_, case, exists, false, func, literal, literal_column, not_, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from vlsearch.library.schema import ImageRecord, Product, ProductImage

FIELDS = ("title", "description", "brand", "category", "price", "currency", "url", "id")
INDEXED = ("brand", "category", "price")  # fields with an index a condition can use (migration 0003)
# The operators longest first: `<=` is not `<` then `=value`.
_CONDITION = re.compile(r"^\s*([\w][\w .\-]*?)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$", re.DOTALL)
_NAME = re.compile(r"^[\w][\w .\-]*$")
MAX_VALUES = 100
SAMPLE, SAMPLE_RUNS = 1000, 10  # products read to estimate the share conditions admit, in runs of rowids


@dataclass(frozen=True)
class Condition:
    name: str  # a product field (FIELDS) or an attribute's name
    op: str
    values: tuple[str, ...]  # as written; several only for = and != (any of them / none of them)

    @classmethod
    def parse(cls, condition: str) -> Condition:
        """`name<op>value`; ValueError saying what is wrong and how it should read."""
        match = _CONDITION.match(condition)
        if not match or not match[3]:
            raise ValueError(f"the condition {condition!r} should read name=value, name!=value, name<number, "
                             "name<=number, name>number or name>=number (name=a|b for any of several values)")
        name, op, raw = match[1].strip().lower(), match[2], match[3]
        if op in ("=", "!="):
            values = tuple(v.strip() for v in raw.split("|") if v.strip())
            if not values or len(values) > MAX_VALUES:
                raise ValueError(f"the condition {condition!r} needs 1 to {MAX_VALUES} values")
            return cls(name, op, values)
        if _number(raw) is None:
            raise ValueError(f"the condition {condition!r} compares with {op}, which needs a number, not {raw!r}")
        return cls(name, op, (raw,))

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"{self.name!r} is not a field or attribute name (letters, digits, _ . - and spaces)")
        if self.name in FIELDS and self.name != "price" and self.op not in ("=", "!="):
            raise ValueError(f"{self.name} is text: compare it with = or != (price and numeric attributes take "
                             "<, <=, > and >=)")

    def clause(self) -> ColumnElement[bool]:
        """SQL on the products table: true where a product meets the condition. On a field, in the form its index
        takes (price is a number; the text fields compare NOCASE, as their indexes do)."""
        if self.name in FIELDS:
            return self._field_clause(getattr(Product, self.name))
        value = func.json_extract(Product.attributes, literal(f'$."{self.name}"'))
        numeric = func.typeof(value).in_(("integer", "real"))
        if self.op in ("<", "<=", ">", ">="):
            return and_(numeric, value.op(self.op)(_number(self.values[0])))
        # One IN on lower(value): SQLite evaluates json_extract once per use, and a test per value read it 2n times.
        # A number matches as SQLite writes it too (lower(42) is '42', a real to 15 digits), besides numerically.
        any_of = func.lower(value).in_([v.lower() for v in self.values])
        numbers = [n for n in map(_number, self.values) if n is not None]
        if numbers:
            any_of = or_(any_of, and_(numeric, value.in_(numbers)))
        return any_of if self.op == "=" else and_(value.is_not(None), not_(any_of))

    def _field_clause(self, column) -> ColumnElement[bool]:
        if self.op in ("<", "<=", ">", ">="):
            return column.op(self.op)(_number(self.values[0])) if self.name == "price" else false()
        if self.name == "price":
            numbers = [n for n in map(_number, self.values) if n is not None]
            any_of = column.in_(numbers) if numbers else false()
        else:
            any_of = column.collate("NOCASE").in_(self.values)
        return any_of if self.op == "=" else and_(column.is_not(None), not_(any_of))

    def __str__(self) -> str:
        return f"{self.name}{self.op}{'|'.join(self.values)}"


@functools.lru_cache(maxsize=256)
def admitted_images(conditions: tuple[Condition, ...]) -> ColumnElement[bool]:
    """SQL on the images table: true for an image of a product meeting every condition. Correlated, so checking a
    page of candidates costs an index lookup each, not a pass over the catalogue."""
    return exists(select(1).select_from(ProductImage).join(Product, Product.id == ProductImage.product_id)
                  .where(ProductImage.image_id == ImageRecord.id, *(c.clause() for c in conditions)))


def few_products(conditions: tuple[Condition, ...], limit: int) -> Select | None:
    """A count, through their indexes, of the products meeting the conditions on indexed fields (brand, category,
    price), at most limit + 1; None when no condition is on one (counting would scan the catalogue)."""
    indexed = [c.clause() for c in conditions if c.name in INDEXED]
    if not indexed:
        return None
    return select(func.count()).select_from(select(Product.id).where(*indexed).limit(limit + 1).subquery())


def admitted_image_ids(conditions: tuple[Condition, ...], limit: int) -> Select:
    """The ids of (up to `limit`) images of products meeting every condition, found from the products' side."""
    return (select(ProductImage.image_id).join(Product, Product.id == ProductImage.product_id)
            .where(ProductImage.image_id.is_not(None), *(c.clause() for c in conditions)).limit(limit))


def admitted_share(session: Session, conditions: tuple[Condition, ...]) -> float:
    """An estimate of the share of products meeting every condition: the share that does of SAMPLE products read
    in SAMPLE_RUNS runs of consecutive rowids spread over the table (a catalogue imported sorted by category is
    sampled across). 0.4 ms at 100k products; 1,000 points read one by one took 2.2. At 3% its error is ~0.5%."""
    rowid = literal_column("products.rowid")
    last = session.scalar(select(func.max(rowid)).select_from(Product)) or 0
    run = SAMPLE // SAMPLE_RUNS
    starts = sorted({1 + max(last - run, 0) * i // (SAMPLE_RUNS - 1) for i in range(SAMPLE_RUNS)})
    met = func.sum(case((and_(*(c.clause() for c in conditions)), 1), else_=0))
    read, admitted = session.execute(select(func.count(), met).select_from(Product).where(
        or_(*(rowid.between(start, start + run - 1) for start in starts)))).one()
    if not last:
        return 0.0
    return (admitted or 0) / read if read else 1.0  # the sampled rowids all deleted: no estimate, assume all


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None

