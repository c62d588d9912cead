"""An image's tag labels, as the library stores them (indexer/tagging.py writes them; search/tags.py reads more)."""

from __future__ import annotations

from sqlalchemy import select

from vlsearch.library.schema import ImageTag
from vlsearch.library.sql import in_chunks
from vlsearch.library.store import Library


def tags_of(library: Library, image_ids: list[int]) -> dict[int, list[str]]:
    """image id -> its tag labels, best first."""
    found: dict[int, list[tuple[float, str]]] = {}
    with library.session() as s:
        for chunk in in_chunks(image_ids):
            for image_id, label, score in s.execute(select(ImageTag.image_id, ImageTag.label, ImageTag.score)
                                                    .where(ImageTag.image_id.in_(chunk))):
                found.setdefault(image_id, []).append((score, label))
    return {i: list(dict.fromkeys(label for _, label in sorted(tags, reverse=True))) for i, tags in found.items()}
