"""SQL that the library's code shares: how many values one `IN (...)` may hold."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# SQLite refuses a statement with more than 32,766 bound parameters (its default since 3.32; Debian's build allows
# 250,000, others fewer); a chunk this size leaves room for the statement's other parameters.
IN_CHUNK = 30_000


def in_chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """Slices of `items` short enough for one SQL `IN (...)`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
