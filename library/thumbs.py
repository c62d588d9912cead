"""Thumbnails: small JPEGs named by content hash, so moved or duplicated files share one."""

import os
from pathlib import Path

THUMB_DIR = "thumbs"


def thumbnail_relpath(sha256: str) -> str:
    return f"{THUMB_DIR}/{sha256[:2]}/{sha256}.jpg"


def store_thumbnail(library_root: Path, sha256: str, jpeg: bytes) -> str:
    """Write (once) the thumbnail of a content hash; returns its path relative to the library. Written under a
    temporary name and renamed, so a reader or a crash never sees half a JPEG, and two writers of the same content
    (identical files) leave one whole file."""
    rel = thumbnail_relpath(sha256)
    path = library_root / rel
    if path.exists():
        return rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(jpeg)
    os.replace(tmp, path)
    return rel
