"""discover -> decode -> embed -> write: incremental, resumable, safe indexing of image files."""

from vlsearch.indexer.decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, DecodeError, decode_bytes
from vlsearch.indexer.discover import discover
from vlsearch.indexer.pipeline import Indexer, IndexReport, ProgressHook, decode_image

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
