"""discover -> decode -> embed -> write: incremental, resumable, safe indexing of image files."""

from indexer.decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, DecodeError, decode_bytes
from indexer.discover import discover
from indexer.pipeline import Indexer, IndexReport, ProgressHook, decode_image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "DecodeError",
    "IndexReport",
    "Indexer",
    "ProgressHook",
    "decode_bytes",
    "decode_image",
    "discover",
]
