"""Finds the image files under the paths a user names."""

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from indexer.decode import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


def discover(
    paths: Iterable[Path], exclude: Iterable[Path] = (), unusable: list[tuple[str, str]] | None = None
) -> Iterator[Path]:
    """Absolute paths of image files: given files as they are, folders walked recursively (no symlinked
    folders, so link loops cannot trap the walk). Folders in `exclude` (the library's own) are never entered.
    Names that cannot be stored (not valid UTF-8) are skipped and listed in `unusable` with the reason."""
    excluded = {Path(p).resolve() for p in exclude}
    for path in paths:
        path = Path(path).expanduser().resolve()
        if path.is_file():
            if _storable(path, unusable):
                yield path
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such file or folder")
        for folder, dirs, files in os.walk(path, onerror=lambda e: log.warning("cannot read %s", e)):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in excluded)
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS and _storable(here / name, unusable):
                    yield here / name


def _storable(path: Path, unusable: list[tuple[str, str]] | None) -> bool:
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        log.warning("skipping %s: its name is not valid UTF-8; rename the file to index it", shown)
        if unusable is not None:
            unusable.append((shown, "file name is not valid UTF-8; rename the file to index it"))
        return False
