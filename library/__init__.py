"""The on-disk library: SQLite rows and embeddings (the truth), FAISS indexes and thumbnails (derived)."""

from library.schema import Embedding, ImageRecord, ModelRecord, Root
from library.store import Library, LibraryBusy, LibraryError, ModelMismatchError
from library.vectors import VectorIndex

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
