"""Where model weights come from, for every model family: whether the hub can be reached at all, and a checkpoint's
content hash (what tells two checkpoints with one file name apart)."""

from __future__ import annotations

import functools
import hashlib
import socket
from pathlib import Path
from urllib.parse import urlparse


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so an air-gapped machine falls back at once instead of retrying for a minute."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def file_digest(path: Path) -> str:
    """sha256 of a file's content, computed once per process for each (path, size, mtime)."""
    st = path.stat()
    return _file_digest(str(path.resolve()), st.st_size, st.st_mtime)


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime: float) -> str:
    """sha256 of a file, remembered per (path, size, mtime): a checkpoint is hashed once per process."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
