"""Duplicate groups over a library: exact copies (the same bytes), copies (the same picture resized, recompressed,
cropped, recoloured, bordered) and near-duplicates (frames of a burst), one suggested keeper each, and forgetting
the others.

How a group forms: every image's k nearest neighbours come from the model's FAISS index, a batch of queries per
search, so a million images cost one pass over the index rather than a million single searches. Two images are
linked when their similarity is at least the near threshold, or when they share a sha256; a group is a connected
set of linked images. Its kind is the strongest link strength that alone still connects all of it: "exact" when all
its images share one sha256, "copy" when links at or above the copy threshold (or equal bytes) connect it, else
"near". A member's similarity is to the keeper, so in a chain it can lie below the threshold that linked it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sqlalchemy import func, select

from vlsearch.encoders.base import VISUAL
from vlsearch.library import Embedding, ImageRecord, Library, ModelRecord
from vlsearch.library.spaces import companion
from vlsearch.library.sql import in_chunks
from vlsearch.library.vectors import VectorIndex
from vlsearch.search.keeper import choose_keeper

if TYPE_CHECKING:
    from vlsearch.library.parquet_io.format import ProgressHook

log = logging.getLogger(__name__)

KINDS = ("exact", "copy", "near")  # strongest first: the order groups are listed in


class ThresholdOrderError(ValueError):
    """The near-duplicate threshold is above the copy threshold, or one lies outside (0, 1]."""

    def __init__(self, copy: float, near: float) -> None:
        super().__init__(f"the near-duplicate threshold ({near}) must be above 0 and at most the copy threshold "
                         f"({copy}), which must be at most 1")
        self.copy, self.near = copy, near


@dataclass(frozen=True)
class Thresholds:
    """Similarity from which two images are copies of one picture, and from which they are near-duplicates."""

    copy: float
    near: float


# Offline preset, 21 sample photos x 7 copies (half size, JPEG q40, 5% and 10% crops, recoloured, 5% border,
# mirrored) and a burst-like frame each (python -m bench duplicates): its visual descriptor scores every copy
# 0.72-1.00 with its original and two distinct photos at most 0.53, so 0.70 links copies and no distinct photos. A
# burst frame scores 0.88-0.95, as high as copies: a "copy" group may hold one.
VISUAL_THRESHOLDS = Thresholds(copy=0.80, near=0.70)
# Search vectors, where a model has no visual descriptor (CLIP's image vectors are what it sees). Measured on the
# offline preset's label-space vectors, the only real weights here: copies 0.84-1.00 on the 8 photographs, distinct
# photos at most 0.59 there but 0.88 among the textures and scans (brick/text).
SEARCH_THRESHOLDS = Thresholds(copy=0.92, near=0.90)
# Links per image: a larger group is still found whole through its members' links. kNN rather than a range search:
# about as fast through IVF (1.26 against 1.22 s per 4,096 queries at 1M, bench/results/duplicates.md; 1.44 against
# 1.22 in another run),
# and every index kind answers it (HNSW, IVF-PQ's rescoring and the GPU copies have no range search).
NEIGHBOURS = 16
QUERY_BATCH = 4_096  # query vectors per FAISS search
# An IVF index probes as many lists as its recall guard set for text queries, more than duplicates need: they lie in
# the nearest lists. 1M synthetic vectors, IVF4000, 4,096 stored vectors as queries (bench/results/duplicates.md):
# nprobe 8 finds 0.989 of their >= 0.90 neighbours in 1.18 s, the guard's 32 finds 0.993 in 5.27 s, 4 finds 0.956.
DUPLICATE_NPROBE = 8


@dataclass(frozen=True)
class DuplicateMember:
    """One image of a group; `similarity` is its vector's to the keeper's (1.0 for the keeper itself and for files
    with the keeper's bytes)."""

    id: int
    path: str
    similarity: float
    width: int | None
    height: int | None
    size: int
    format: str | None
    taken_at: datetime | None
    sha256: str | None


@dataclass(frozen=True)
class DuplicateGroup:
    """Images of one picture: `members` holds the suggested keeper first, then the others, most similar first."""

    kind: str
    members: list[DuplicateMember]

    @property
    def keeper(self) -> DuplicateMember:
        return self.members[0]

    @property
    def others(self) -> list[DuplicateMember]:
        return self.members[1:]

    def as_dict(self) -> dict:
        members = [{**asdict(m), "similarity": round(m.similarity, 6),
                    "taken_at": m.taken_at.isoformat() if m.taken_at else None} for m in self.members]
        return {"kind": self.kind, "keeper": self.keeper.id, "keeper_path": self.keeper.path, "members": members}


@dataclass(frozen=True)
class Links:
    """Pairs of image ids (a[i], b[i]) and their similarity; equal bytes count as similarity 1."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray


def comparison_space(library: Library, model: str) -> tuple[str, Thresholds]:
    """The vectors duplicates are found with, and their default thresholds: `model`'s visual descriptors when every
    image with its vector has one (library/spaces.py), else its search vectors. Raises ModelMismatchError when the
    library has no vectors of `model`."""
    library.require_model(model)
    visual = companion(model, VISUAL)
    with library.session() as s:
        recorded = s.get(ModelRecord, visual) is not None
    if recorded:
        have, need = library.vector_count(visual), library.vector_count(model)
        if have == need:
            return visual, VISUAL_THRESHOLDS
        log.warning("%d of %d images lack %s's visual descriptor, so duplicates are compared by their search vectors; "
                    "run `vlsearch index` on the library's folders again to add them", need - have, need, model)
    return model, SEARCH_THRESHOLDS


def find_duplicates(library: Library, model: str, *, copy_threshold: float | None = None,
                    near_threshold: float | None = None, k: int = NEIGHBOURS,
                    progress: ProgressHook | None = None) -> list[DuplicateGroup]:
    """The duplicate groups among the usable images that have `model`'s vectors, exact ones first, then copies,
    then near-duplicates, larger groups first within a kind; compared in `comparison_space`, whose thresholds
    stand where none are given. `progress` counts the images compared. Raises ModelMismatchError when the library
    has no vectors of `model`, ThresholdOrderError for thresholds out of order."""
    space, defaults = comparison_space(library, model)
    copy_threshold = defaults.copy if copy_threshold is None else copy_threshold
    near_threshold = defaults.near if near_threshold is None else near_threshold
    if not 0 < near_threshold <= copy_threshold <= 1:
        raise ThresholdOrderError(copy_threshold, near_threshold)
    if k < 1:
        raise ValueError(f"each image needs at least one neighbour to compare with, not {k}")
    links = _join(neighbour_links(library, space, library.vector_index(space), near_threshold, k, progress),
                  same_bytes_links(library, space))
    if not len(links.a):
        return []
    nodes = np.unique(np.concatenate([links.a, links.b]))
    strong = links.score >= copy_threshold
    found = _hydrate(library, space, nodes, components(links.a, links.b, nodes),
                     components(links.a[strong], links.b[strong], nodes))
    return sorted(found, key=lambda g: (KINDS.index(g.kind), -len(g.members), g.keeper.id))


def neighbour_links(library: Library, model: str, index: VectorIndex, threshold: float, k: int,
                    progress: ProgressHook | None = None) -> Links:
    """Each stored vector's k nearest neighbours in `index` that score at least `threshold` (itself left out),
    searched QUERY_BATCH vectors at a time as they are read from SQLite."""
    stored = library.stored_vectors(model)
    if progress:
        progress.start(stored.count())
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for ids, vectors in stored.chunks(QUERY_BATCH)():
        scores, neighbours = index.search(vectors, k + 1, probe_cap=DUPLICATE_NPROBE)
        keep = (scores >= threshold) & (neighbours >= 0) & (neighbours != ids[:, None])
        found.append((np.broadcast_to(ids[:, None], keep.shape)[keep], neighbours[keep], scores[keep]))
        if progress:
            progress.advance(len(ids))
    return _join(*(Links(*parts) for parts in found))



def same_bytes_links(library: Library, model: str) -> Links:
    """Links between usable images with `model`'s vectors whose files have the same sha256: each to the next."""
    shared = (select(ImageRecord.sha256).where(ImageRecord.status == "ok", ImageRecord.sha256.is_not(None))
              .group_by(ImageRecord.sha256).having(func.count() > 1))
    query = (select(ImageRecord.id, ImageRecord.sha256).join(Embedding, Embedding.image_id == ImageRecord.id)
             .where(Embedding.model == model, ImageRecord.status == "ok", ImageRecord.sha256.in_(shared))
             .order_by(ImageRecord.sha256, ImageRecord.id))
    with library.session() as s:
        rows = s.execute(query).all()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    shas = np.array([r[1] for r in rows], dtype=object)
    pairs = np.flatnonzero(shas[1:] == shas[:-1])
    return Links(ids[pairs], ids[pairs + 1], np.ones(len(pairs), dtype=np.float32))


def components(a: np.ndarray, b: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """The label of each of `nodes` (sorted image ids) in the graph with edges a[i]-b[i]: equal labels, one
    connected group."""
    where_a, where_b = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (where_a, where_b)), shape=(len(nodes), len(nodes)))
    return connected_components(graph, directed=False)[1]


def _join(*parts: Links) -> Links:
    if not parts:
        return Links(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))
    return Links(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("a", "b", "score")))


def _hydrate(library: Library, model: str, nodes: np.ndarray, groups: np.ndarray,
             copy_groups: np.ndarray) -> list[DuplicateGroup]:
    """Each connected set of `nodes` (image ids) as a DuplicateGroup: rows read, keeper chosen, kind decided."""
    ids, vectors = library.load_vectors(model, nodes.tolist())
    vector_of = dict(zip(ids.tolist(), vectors, strict=True))
    rows = _rows(library, nodes.tolist())
    order = np.argsort(groups, kind="stable")
    starts = np.flatnonzero(np.diff(groups[order], prepend=-1))
    found = []
    for members in np.split(order, starts[1:]):
        records = [rows[i] for i in nodes[members].tolist() if i in rows and i in vector_of]
        if len(records) < 2:  # forgotten since its links were found
            continue
        keeper = choose_keeper(records, library.root)
        shas = {r.sha256 for r in records}
        kind = ("exact" if len(shas) == 1 and None not in shas
                else "copy" if len(set(copy_groups[members].tolist())) == 1 else "near")
        found.append(DuplicateGroup(kind, _members(keeper, records, vector_of)))
    return found


def _rows(library: Library, ids: Sequence[int]) -> dict[int, ImageRecord]:
    rows: dict[int, ImageRecord] = {}
    with library.session() as s:
        for chunk in in_chunks(ids):
            rows.update((r.id, r) for r in s.scalars(select(ImageRecord).where(ImageRecord.id.in_(chunk))))
    return rows


def _members(keeper: ImageRecord, records: list[ImageRecord],
             vector_of: dict[int, np.ndarray]) -> list[DuplicateMember]:
    """The keeper first, then the others by similarity to it (highest first), then by id."""
    def member(row: ImageRecord) -> DuplicateMember:
        same = row.sha256 is not None and row.sha256 == keeper.sha256
        similarity = 1.0 if same else float(vector_of[row.id] @ vector_of[keeper.id])
        return DuplicateMember(row.id, row.path, similarity, row.width, row.height, row.size, row.format,
                               row.taken_at, row.sha256)

    others = sorted((member(r) for r in records if r.id != keeper.id), key=lambda m: (-m.similarity, m.id))
    return [member(keeper), *others]


def forget_duplicates(library: Library, groups: Iterable[DuplicateGroup]) -> list[int]:
    """Forget every group's images but its keeper, as `POST /images/delete` does: rows, vectors, captions and OCR
    text leave SQLite and the vectors every FAISS index; the files stay. Returns the ids forgotten (not those
    already gone). Raises LibraryBusy when another writer holds the library."""
    ids = sorted({m.id for g in groups for m in g.others})
    if not ids:
        return []
    with library.writer("forgetting duplicates"):
        return library.forget_images(ids)
