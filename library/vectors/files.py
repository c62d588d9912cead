"""An index's files: the FAISS file and its metadata (.json) beside it, each written through a temp file and a
rename, the temp files of killed writers cleaned up, and a large file memory-mapped read-only when it is read."""

from __future__ import annotations

import glob
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss

from vlsearch.library.vectors.plan import format_bytes

log = logging.getLogger(__name__)

# A saved IVF index larger than this share of the available RAM is memory-mapped read-only on load.
MMAP_RAM_FRACTION = 0.5


@dataclass(frozen=True)
class IndexMeta:
    """What a saved index was built from: compared with SQLite on load to detect a stale file. `params` are the
    search settings the recall guard chose, `recall` what it measured (empty for exact search and old files),
    `requested` the kind a rebuild should ask for again (a stale ivfpq index stays ivfpq)."""

    model: str
    generation: int
    count: int
    kind: str
    params: dict[str, int] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)
    requested: str = ""  # the kind asked for (auto or a kind); "" in files saved before it was recorded
    build: dict[str, Any] = field(default_factory=dict)  # the plan, budget, timings and latency; see IndexPlan


def meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def write_index(index: faiss.Index, path: Path, meta: IndexMeta) -> dict[str, Any]:
    """Write the index and then its metadata, each through a temp file and a rename: a crash leaves
    either the old pair, or a new index beside old metadata, which reads as stale and is rebuilt. FAISS writes
    the file itself (a serialised copy in memory would double a large index's RAM). Returns the build record as
    saved (with the file's size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in (path, meta_path(path)):
        _remove_dead_writers_temps(target)
    _atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))
    build = {**meta.build, "file_bytes": path.stat().st_size} if meta.build else meta.build
    data = json.dumps(asdict(meta) | {"build": build}).encode()
    _atomic_write(meta_path(path), lambda tmp: tmp.write_bytes(data))
    return dict(build)


def read_index(path: Path, dim: int, mmap: bool | None = None) -> tuple[faiss.Index, IndexMeta, bool]:
    """(the FAISS index, its metadata, whether it is memory-mapped); raises on a missing, unreadable or foreign
    file. An IVF index is memory-mapped read-only (its lists stay on disk, in the page cache) when `mmap` says so,
    or by default when the file is larger than MMAP_RAM_FRACTION of the available RAM."""
    meta = IndexMeta(**json.loads(meta_path(path).read_text()))
    size = path.stat().st_size
    if mmap is None:  # a file from before the recall guard is checked and saved again: not mapped
        mmap = bool(meta.recall) and size > MMAP_RAM_FRACTION * available_memory()
    mmap = mmap and meta.kind in ("ivf", "ivfpq")
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0)
    if index.d != dim:
        raise ValueError(f"{path}: index has dimension {index.d}, expected {dim}")
    if index.ntotal != meta.count:
        raise ValueError(f"{path}: index holds {index.ntotal} vectors, its metadata says {meta.count}")
    if kind_of(index) != meta.kind:  # a crash between writing the index and its metadata
        raise ValueError(f"{path}: holds a {kind_of(index)} index, its metadata says {meta.kind}")
    if mmap:
        log.info("%s (%s) is memory-mapped read-only", path, format_bytes(size))
    return index, meta, mmap


def kind_of(index: faiss.Index) -> str:
    """Which of INDEX_KINDS a (deserialised) FAISS index is."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):  # OPQ before IVF-PQ
        index = faiss.downcast_index(index.index)
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        return "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat" if isinstance(inner, faiss.IndexFlat) else "?"
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf"
    return type(index).__name__


def available_memory() -> int:
    """Bytes of RAM available to new allocations (MemAvailable), or all of it where that cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _remove_dead_writers_temps(path: Path) -> None:
    """Delete the temp files of `path` that writers killed mid-write left (kill -9, OOM killer): each is as large
    as the index (GBs at 1M vectors), and every crash during a save would leave one more. A temp file whose
    writer (the pid in its name) is alive is kept: it may be renamed any moment."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a temp file, which is synced and renamed over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # unique per writer
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an interrupt leaves the old file and no litter
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
