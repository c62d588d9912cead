"""Finds the image files under the paths a user names."""

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from vlsearch.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


def discover(
    paths: Iterable[Path],
    exclude: Iterable[Path] = (),
    unusable: list[tuple[str, str]] | None = None,
    confine_to: Iterable[Path] | None = None,
) -> Iterator[Path]:
    """Absolute paths of image files: given files as they are, folders walked recursively (no symlinked
    folders, so link loops cannot trap the walk). Folders in `exclude` (the library's own) are never entered.
    Names that cannot be stored (not valid UTF-8) are skipped and listed in `unusable` with the reason.
    With `confine_to` (the server's allowed folders), a symlinked file whose target lies outside them is skipped
    and listed too: a link must not smuggle a file the operator did not allow into captions and thumbnails."""
    excluded = {Path(p).resolve() for p in exclude}
    allowed = None if confine_to is None else [Path(os.path.realpath(p)) for p in confine_to]

    def usable(path: Path) -> bool:
        if not _storable(path, unusable):
            return False
        if allowed is None or not path.is_symlink() or not path.exists():
            return True  # a dangling link fails when read, with that reason
        target = Path(os.path.realpath(path))
        if any(target.is_relative_to(root) for root in allowed):
            return True
        log.warning("skipping %s: a link to %s, outside the folders this server may index", path, target)
        if unusable is not None:
            unusable.append((str(path), "a symlink to a file outside the folders this server may index"))
        return False

    for path in paths:
        path = Path(path).expanduser().resolve()
        if path.is_file():
            if usable(path):
                yield path
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such file or folder")
        for folder, dirs, files in os.walk(path, onerror=lambda e: log.warning("cannot read %s", e)):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in excluded)
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS and usable(here / name):
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
