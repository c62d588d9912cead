"""Finds the image files under the paths a user names."""

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from indexer.decode import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


def discover(paths: Iterable[Path], exclude: Path | None = None) -> Iterator[Path]:
    """Absolute paths of image files: given files as they are, folders walked recursively (no symlinked
    folders, so link loops cannot trap the walk). `exclude` (the library itself) is never entered."""
    excluded = exclude.resolve() if exclude else None
    for path in paths:
        path = Path(path).expanduser().resolve()
        if path.is_file():
            yield path
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such file or folder")
        for folder, dirs, files in os.walk(path, onerror=lambda e: log.warning("cannot read %s", e)):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if excluded is None or (here / d).resolve() != excluded)
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                    yield here / name
