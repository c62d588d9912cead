"""Duplicate groups for review: exact copies, copies (resized, recompressed, cropped, bordered) and near-identical
shots, each with a suggested keeper. Forgetting the others goes through `POST /images/delete`, behind the key."""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from vlsearch.api.deps import get_service, one_value_each
from vlsearch.api.errors import ApiError, responses
from vlsearch.api.review_schemas import DuplicateGroupOut, DuplicateMemberOut, DuplicatesOut, Kind
from vlsearch.api.security import require_read
from vlsearch.api.service import Service
from vlsearch.encoders.base import VISUAL
from vlsearch.library import ModelRecord
from vlsearch.library.spaces import companion
from vlsearch.search.duplicates import DuplicateGroup, ThresholdOrderError, find_duplicates

router = APIRouter(tags=["duplicates"])
MAX_GROUPS = 1000


class GroupCache:
    """The groups of the latest library and settings, kept while its vectors stay as they were (their generation):
    finding them reads every vector, and a review pages through them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple | None = None
        self.groups: list[DuplicateGroup] = []

    def get(self, service: Service, copy_threshold: float | None,
            near_threshold: float | None) -> list[DuplicateGroup]:
        model = service.encoder.name
        with self.lock:
            # Every change to either space's vectors bumps its generation, so the key needs no count of them
            # (comparison_space counts both, which a page request need not pay again).
            with service.library.session() as s:
                generations = tuple(getattr(s.get(ModelRecord, name), "generation", None)
                                    for name in (model, companion(model, VISUAL)))
            if generations[0] is None:
                return []
            key = (str(service.library.root), model, generations, copy_threshold, near_threshold)
            if key != self.key:
                self.groups = find_duplicates(service.library, model, copy_threshold=copy_threshold,
                                              near_threshold=near_threshold)
                self.key = key
            return self.groups


CACHE = GroupCache()


@router.get("/duplicates", response_model=DuplicatesOut, dependencies=[Depends(require_read), Depends(one_value_each)],
            responses=responses(401, 403, 422), summary="Groups of duplicate images, for review")
async def duplicates(
    copy_threshold: Annotated[float | None, Query(gt=0, le=1, allow_inf_nan=False, description=(
        "Similarity from which two images are the same picture. Default: 0.80 with a visual descriptor (the "
        "offline preset), else 0.92."))] = None,
    near_threshold: Annotated[float | None, Query(gt=0, le=1, allow_inf_nan=False, description=(
        "Similarity from which two images are near-identical shots. Default: 0.70 with a visual descriptor, else "
        "0.90."))] = None,
    kind: Annotated[list[Kind] | None, Query(max_length=3, description="Only groups of these kinds (repeatable).")]
    = None,
    limit: Annotated[int, Query(ge=1, le=MAX_GROUPS)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    service: Service = Depends(get_service),
) -> DuplicatesOut:
    """Exact groups first, then copies, then near-duplicates, larger groups first. Found from every image's nearest
    neighbours in the FAISS index: the first request after the library changes reads every vector (about a minute
    at a million images); pages of the same settings reuse the groups."""
    try:
        groups = await asyncio.to_thread(CACHE.get, service, copy_threshold, near_threshold)
    except ThresholdOrderError as exc:  # out of order once the defaults are filled in
        raise ApiError(422, f"near_threshold ({exc.near}) must be at most copy_threshold ({exc.copy})") from None
    chosen = [g for g in groups if kind is None or g.kind in kind]
    return DuplicatesOut(total=len(chosen), groups=[group_out(g) for g in chosen[offset: offset + limit]])


def group_out(group: DuplicateGroup) -> DuplicateGroupOut:
    return DuplicateGroupOut(kind=group.kind, keeper=group.keeper.id, members=[
        DuplicateMemberOut(id=m.id, path=m.path, similarity=round(m.similarity, 6), width=m.width, height=m.height,
                           size=m.size, format=m.format, thumbnail_url=f"/api/v1/images/{m.id}/thumbnail")
        for m in group.members])
