"""The library's writer lock: one indexing run at a time per library, whichever process (or server job) runs it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from vlsearch.library.errors import LibraryBusy

WRITER_LOCK = "writer.lock"

# Writer-lock file descriptors this process holds. A process forked while holding one (the indexer's decoding
# workers) closes its copy: otherwise the flock lives on in the child, and after `kill -9` of the indexer its
# orphaned workers kept the library locked ("already writing") until they noticed and exited. Closing the copy
# leaves the lock with the parent (flock releases only on LOCK_UN or when the last descriptor closes).
_HELD_WRITER_FDS: set[int] = set()


def _close_inherited_writer_locks() -> None:
    for fd in list(_HELD_WRITER_FDS):
        with suppress(OSError):
            os.close(fd)
    _HELD_WRITER_FDS.clear()


os.register_at_fork(after_in_child=_close_inherited_writer_locks)


@contextmanager
def writer_lock(root: Path, who: str) -> Iterator[None]:
    """Hold the writer lock of the library at `root` (an flock on writer.lock, released by the OS if the holder
    dies), saying `who` holds it. Raises LibraryBusy at once, naming the holder, if another holds it."""
    fd = os.open(root / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise LibraryBusy(root, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{who} (pid {os.getpid()})".encode(), 0)
        _HELD_WRITER_FDS.add(fd)
        try:
            yield
        finally:
            _HELD_WRITER_FDS.discard(fd)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
