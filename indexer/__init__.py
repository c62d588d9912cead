"""discover -> decode -> embed -> write: incremental, resumable, safe indexing of image files."""

from vlsearch.images import DEFAULT_MAX_PIXELS, DecodeError
from vlsearch.images import decode_file as decode_image
from vlsearch.indexer.discover import discover
from vlsearch.indexer.pipeline import Indexer, IndexReport, ProgressHook

__all__ = ["DEFAULT_MAX_PIXELS", "DecodeError", "IndexReport", "Indexer", "ProgressHook", "decode_image", "discover"]
