"""Reading an image file's bytes so that no file system trick can stall or fool the reader."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from vlsearch.images.errors import DecodeError


def read_image_file(path: Path | str, confine_to: Sequence[Path] | None = None) -> bytes:
    """The bytes of one image file.

    Only a regular file is read: a pipe, device or socket named `.jpg` would block forever or never end (it is
    opened non-blocking, so even the open returns). With `confine_to` (real paths of the server's allowed folders),
    the file actually opened must lie inside them: a symlink swapped in after the folder was listed cannot bring
    an outside file in. Raises OSError (cannot open or read) or DecodeError (not allowed)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise DecodeError("not a regular file (a pipe, device or socket); only image files are read")
        if confine_to is not None:
            opened = _opened_path(fd, path)
            if not any(opened.is_relative_to(root) for root in confine_to):
                raise DecodeError("leads (through a symlink) to a file outside the folders this server may index")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _opened_path(fd: int, path: Path | str) -> Path:
    """The real path of what `fd` refers to: Linux says it exactly; elsewhere resolve the name (racy, the best
    there is)."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(os.path.realpath(path))
