"""Reading tags: an image's tags, tag counts for facets, and the SQL that admits images carrying a tag."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import exists, func, select
from sqlalchemy.sql.elements import ColumnElement

from vlsearch.library import ImageRecord, Library
from vlsearch.library.schema import ImageTag
from vlsearch.library.sql import in_chunks
from vlsearch.library.tags import tags_of

__all__ = ["Tag", "image_tags", "resolve_image", "tagged", "tags_by_path", "tags_of"]


@dataclass(frozen=True)
class Tag:
    label: str
    score: float  # the label's share of its vocabulary, or a classifier's probability (indexer/tagging.py)
    similarity: float  # the cosine of the image's and the label's vectors
    vocabulary: str

    def as_dict(self) -> dict:
        return asdict(self)


def image_tags(library: Library, image_id: int) -> list[Tag]:
    """The image's tags, best first (of several models' tags for one label, the best)."""
    with library.session() as s:
        rows = s.execute(select(ImageTag.label, func.max(ImageTag.score), func.max(ImageTag.similarity),
                                ImageTag.vocabulary).where(ImageTag.image_id == image_id)
                         .group_by(ImageTag.vocabulary, ImageTag.label)).all()
    return sorted((Tag(*row) for row in rows), key=lambda t: -t.score)


def tags_by_path(library: Library, paths: list[str]) -> dict[str, list[str]]:
    """path -> its tag labels, best first, for the paths the library has."""
    with library.session() as s:
        ids = {i: p for chunk in in_chunks(paths)
               for p, i in s.execute(select(ImageRecord.path, ImageRecord.id).where(ImageRecord.path.in_(chunk)))}
    return {ids[i]: labels for i, labels in tags_of(library, list(ids)).items()}


def resolve_image(library: Library, ref: str) -> int:
    """An image id from an id or a path; LookupError when the library has no such image."""
    with library.session() as s:
        if ref.isdigit() and s.get(ImageRecord, int(ref)) is not None:
            return int(ref)
        image_id = s.scalar(select(ImageRecord.id).where(ImageRecord.path == str(Path(ref).expanduser().resolve())))
    if image_id is None:
        raise LookupError(f"{ref} is not an indexed image (give its path or id)")
    return image_id


def tagged(label: str) -> ColumnElement[bool]:
    """SQL on the images table: true for an image tagged `label` (in any case, by any vocabulary)."""
    return exists().where(ImageTag.image_id == ImageRecord.id, ImageTag.label.collate("NOCASE") == label)
