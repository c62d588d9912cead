"""The on-disk library: SQLite rows and embeddings (the truth), FAISS indexes and thumbnails (derived)."""

from vlsearch.library.errors import LibraryBusy, LibraryError, ModelMismatchError
from vlsearch.library.schema import Embedding, ImageRecord, ModelRecord, Root
from vlsearch.library.store import Library
from vlsearch.library.vectors import VectorIndex

__all__ = [
    "Embedding",
    "ImageRecord",
    "Library",
    "LibraryBusy",
    "LibraryError",
    "ModelMismatchError",
    "ModelRecord",
    "Root",
    "VectorIndex",
]
