"""What a run must do: the files under the paths asked for (and the files and URLs of lists), compared with the
library, so that only new, changed and failed files, and those lacking the model's vector, are decoded; and, after
the run, which files vanished from the folders walked."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Select, delete, func, select

from vlsearch.indexer.discover import discover
from vlsearch.indexer.items import WorkItem
from vlsearch.indexer.report import IndexReport
from vlsearch.indexer.sources import is_url, read_source_list
from vlsearch.library import Embedding, ImageRecord, Library, Root
from vlsearch.library.index_cache import VECTOR_DIR
from vlsearch.library.records import UNDER_ANY_MAX, under_any
from vlsearch.library.spaces import companion
from vlsearch.library.sql import in_chunks
from vlsearch.library.thumbs import THUMB_DIR

log = logging.getLogger(__name__)


@dataclass
class Plan:
    work: list[WorkItem]
    files: dict[str, Path]  # every image file found under the paths
    folders: list[Path]  # the paths that are folders: what pruning looks in


class Planner:
    """Plans runs of one model over one library. `confine_to`: symlinked files whose targets lie outside these
    folders are not followed (the server's index_roots); `exclude`: folders never entered (the library's own)."""

    def __init__(self, library: Library, model: str, *, confine_to: list[Path] | None = None,
                 exclude: Iterable[Path] = (), companions: Iterable[str] = ()) -> None:
        self.library = library
        self.model = model
        self.spaces = [model, *(companion(model, role) for role in companions)]
        self.confine_to = confine_to
        self.exclude = [library.root / THUMB_DIR, library.root / VECTOR_DIR, *exclude]

    def plan(self, paths: Iterable[Path | str], report: IndexReport, lists: Iterable[Path] = (),
             skip: frozenset[str] = frozenset()) -> Plan:
        """Discover, remember the folders as roots, and plan. `skip`: paths done elsewhere (counted unchanged)."""
        roots = [_storable_root(Path(p)) for p in paths]
        unusable: list[tuple[str, str]] = []
        files = {str(p): p for p in discover(roots, exclude=self.exclude, unusable=unusable,
                                                 confine_to=self.confine_to)}
        report.seen = len(files) + len(unusable)
        report.errors += len(unusable)
        report.failures.extend(unusable)
        folders = [r for r in roots if r.is_dir()]
        self._remember_roots(folders)
        work = self._plan_files(files, roots, report) if files else []
        listed = [p for source in lists for p in read_source_list(source)]
        listed = [p for p in dict.fromkeys(listed) if p not in files]
        report.seen += len(listed)
        work += self._plan_listed(listed, report)
        if skip:
            before = len(work)
            work = [w for w in work if w.path not in skip]
            report.unchanged += before - len(work)
        return Plan(work, files, folders)

    def _remember_roots(self, folders: list[Path]) -> None:
        with self.library.session() as s:
            for folder in folders:
                if s.get(Root, str(folder)) is None:
                    s.add(Root(path=str(folder)))

    def _plan_files(self, files: dict[str, Path], roots: list[Path], report: IndexReport) -> list[WorkItem]:
        """Which files need decoding: new, changed (size or mtime), failed before, or lacking this model's vector."""
        known: dict[str, tuple[int, int, float, str, bool]] = {}
        has_vector = self._has_vectors()
        with self.library.session() as s:
            for chunk in in_chunks(roots, UNDER_ANY_MAX):
                rows = s.execute(
                    select(ImageRecord.path, ImageRecord.id, ImageRecord.size, ImageRecord.mtime,
                           ImageRecord.status, ImageRecord.id.in_(has_vector)).where(under_any(ImageRecord.path, chunk))
                )
                for path, image_id, size, mtime, status, embedded in rows:
                    known[path] = (image_id, size, mtime, status, bool(embedded))
        work = []
        for path_str, path in files.items():
            st = _stat(path)
            if st is None:
                continue
            row = known.get(path_str)
            # Files that failed before are tried again: the cause (permissions, the pixel limit, a decoder upgrade, a
            # remounted drive) may be gone without the file changing.
            if row is not None and (row[1], row[2], row[3], row[4]) == (st.st_size, st.st_mtime, "ok", True):
                report.unchanged += 1
                continue
            work.append(WorkItem(path_str, st.st_size, st.st_mtime, row[0] if row else None))
        return work

    def _has_vectors(self) -> Select:
        """The ids of images holding the model's vector and every companion the run stores."""
        if len(self.spaces) == 1:
            return select(Embedding.image_id).where(Embedding.model == self.model)
        return (select(Embedding.image_id).where(Embedding.model.in_(self.spaces)).group_by(Embedding.image_id)
                .having(func.count() == len(self.spaces)))

    def _plan_listed(self, listed: list[str], report: IndexReport) -> list[WorkItem]:
        """Listed files and URLs: a URL already indexed (status ok, with this model's vector) is unchanged; a file
        is compared by size and time when this machine sees it, else treated like a URL."""
        known: dict[str, tuple[int, int, float, bool]] = {}
        has_vector = self._has_vectors()
        with self.library.session() as s:
            for chunk in in_chunks(listed):
                rows = s.execute(
                    select(ImageRecord.path, ImageRecord.id, ImageRecord.size, ImageRecord.mtime,
                           (ImageRecord.status == "ok") & ImageRecord.id.in_(has_vector))
                    .where(ImageRecord.path.in_(chunk))
                )
                for path, image_id, size, mtime, done in rows:
                    known[path] = (image_id, size, mtime, bool(done))
        work = []
        for path in listed:
            size, mtime = 0, 0.0
            if not is_url(path):
                try:
                    st = os.stat(path)
                    size, mtime = st.st_size, st.st_mtime
                except OSError:
                    pass  # not visible here: the workers read it (or say why they cannot)
            row = known.get(path)
            if row is not None and row[3] and (not size or (row[1], row[2]) == (size, mtime)):
                report.unchanged += 1
                continue
            work.append(WorkItem(path, size, mtime, row[0] if row else None))
        return work

    def prune(self, plan: Plan, report: IndexReport) -> list[int]:
        """Forget files that vanished from the folders walked (moved ones were already claimed); their ids."""
        files, folders = plan.files, plan.folders
        if not folders:
            return []
        found = {folder for folder in folders if any(p.startswith(str(folder).rstrip("/") + "/") for p in files)}
        empty = [f for f in folders if f not in found]
        if empty:
            # An unmounted drive or a renamed share looks exactly like a folder whose photos were all deleted.
            log.warning("no images found under %s; keeping what the library knows of it (is the drive mounted?)",
                        ", ".join(map(str, empty)))
            folders = [f for f in folders if f in found]
            if not folders:
                return []
        spared = tuple(str(f).rstrip("/") + "/" for f in empty)  # an empty root nested in a walked one
        with self.library.session() as s:
            rows = {image_id: path for chunk in in_chunks(folders, UNDER_ANY_MAX) for image_id, path in s.execute(
                select(ImageRecord.id, ImageRecord.path).where(under_any(ImageRecord.path, chunk)))}
            gone = [image_id for image_id, path in rows.items()
                    if path not in files and not os.path.exists(path) and not path.startswith(spared)]
            # every model and companion with vectors of these images, not only this run's: their indexes change too
            spaces = {m for chunk in in_chunks(gone)
                      for m in s.scalars(select(Embedding.model).where(Embedding.image_id.in_(chunk)).distinct())}
            for chunk in in_chunks(gone):
                s.execute(delete(ImageRecord).where(ImageRecord.id.in_(chunk)))
            for space in sorted(spaces | (set(self.spaces) if gone else set())):
                Library.bump_generation(s, space)
        report.removed = len(gone)
        return gone


def _storable_root(path: Path) -> Path:
    root = path.expanduser().resolve()
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(root).decode("utf-8", "backslashreplace")
        raise ValueError(f"{shown}: the name is not valid UTF-8; rename it to index it") from None
    return root


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        try:  # a dangling or looping symlink: planned all the same, so its read fails and is recorded
            return path.lstat()
        except OSError as exc:  # gone since it was listed
            log.warning("cannot stat %s: %s", path, exc)
            return None
