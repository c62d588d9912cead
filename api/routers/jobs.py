"""Index jobs: start one on folders the operator allowed, then poll its progress."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastapi import APIRouter, Depends

from vlsearch.api.deps import JobId, get_service
from vlsearch.api.errors import ApiError, responses
from vlsearch.api.http_wording import say
from vlsearch.api.jobs import Job
from vlsearch.api.schemas import IndexRequest, JobOut
from vlsearch.api.security import require_read, require_write
from vlsearch.api.service import Service
from vlsearch.library import LibraryBusy, LibraryError

router = APIRouter(tags=["indexing"])


def job_out(job: Job) -> JobOut:
    return JobOut(id=job.id, state=job.state, phase=job.phase, paths=job.paths, done=job.done, total=job.total,
                  errors=job.errors, images_per_second=round(job.images_per_second, 3), started_at=job.started_at,
                  finished_at=job.finished_at, error=job.error, summary=job.summary,
                  failures=[[p, r] for p, r in job.failures[:100]], url=f"/api/v1/jobs/{job.id}")


def allowed(service: Service, raw: str) -> Path:
    """The resolved path, if it exists and lies under one of the operator's index_roots."""
    roots = service.settings.index_roots
    if not roots:
        raise ApiError(403, "indexing over HTTP is off: the operator has to allow folders with VLSEARCH_INDEX_ROOTS "
                       "(or index_roots in the config file)", code="no_index_roots")
    if not os.path.isabs(raw):
        raise ApiError(422, f"{raw!r}: give an absolute path on the server")
    try:
        path = Path(os.path.realpath(raw))
    except (OSError, ValueError) as exc:
        raise ApiError(422, f"{raw!r}: not a usable path ({exc})") from None
    if not any(path.is_relative_to(root) for root in roots):
        raise ApiError(403, f"{raw!r} is outside the folders this server may index ({', '.join(map(str, roots))})",
                       code="outside_index_roots")
    if not path.exists():
        raise ApiError(404, f"{raw!r}: no such file or folder on the server")
    return path


@router.post("/index", response_model=JobOut, status_code=202, dependencies=[Depends(require_write)],
             responses=responses(401, 403, 404, 409, 422), summary="Start indexing folders on the server")
async def start_index(body: IndexRequest, service: Service = Depends(get_service)) -> JobOut:
    """Embeds new and changed images under the paths (then captions and OCR), in the background: poll the job's
    `url`. The job goes on if the client disconnects. While one runs on this library (here, or `vlsearch index` in
    another process), another is refused with 409."""
    paths = [allowed(service, p) for p in body.paths]
    try:
        job = await asyncio.to_thread(service.jobs.start, paths, body.captions, body.ocr, body.prune)
    except LibraryBusy as exc:
        raise ApiError(409, say(exc), code="busy") from None
    except LibraryError as exc:
        raise ApiError(409, say(exc)) from None
    return job_out(job)


@router.get("/jobs", response_model=list[JobOut], dependencies=[Depends(require_read)],
            responses=responses(401, 403), summary="Index jobs of this server run")
async def list_jobs(service: Service = Depends(get_service)) -> list[JobOut]:
    """Newest first (jobs are remembered until the server stops)."""
    return [job_out(j) for j in sorted(service.jobs.jobs.values(), key=lambda j: -j.id)]


@router.get("/jobs/{job_id}", response_model=JobOut, dependencies=[Depends(require_read)],
            responses=responses(401, 403, 404, 422), summary="An index job's progress")
async def get_job(job_id: JobId, service: Service = Depends(get_service)) -> JobOut:
    job = service.jobs.jobs.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id} (jobs are forgotten when the server restarts)")
    return job_out(job)
