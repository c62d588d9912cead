"""The service itself: library counts, health, and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import text

from vlsearch.api.deps import get_service
from vlsearch.api.errors import ApiError, responses
from vlsearch.api.routers.jobs import job_out
from vlsearch.api.schemas import Health, ModelCount, ServerModels, Stats
from vlsearch.api.security import require_read
from vlsearch.api.service import Service

router = APIRouter(tags=["service"])


@router.get("/stats", response_model=Stats, dependencies=[Depends(require_read)], responses=responses(401, 403),
            summary="Library counts and the models loaded")
async def stats(service: Service = Depends(get_service)) -> Stats:
    st = await asyncio.to_thread(service.library.stats)
    m = service.models
    running = service.jobs.running()
    return Stats(
        library=str(st.root), images=st.images, errors=st.errors,
        models=[ModelCount(name=x.name, dim=x.dim, vectors=x.vectors) for x in st.models],
        captions=st.captions, ocr=st.ocr, disk_bytes=st.disk_bytes, schema_revision=st.schema_revision,
        loaded=ServerModels(embedding=m.encoder.name, caption=m.captioner.name if m.captioner else None,
                            vqa=m.answerer.name if m.answerer else None, itm=m.matcher.name if m.matcher else None,
                            ocr=m.ocr is not None),
        job=job_out(running) if running else None,
    )


def _database_answers(service: Service) -> None:
    with service.library.session() as s:
        s.execute(text("SELECT 1"))


@router.get("/healthz", response_model=Health, responses=responses(503), summary="Liveness and readiness")
async def healthz(service: Service = Depends(get_service)) -> Health:
    """200 when the models are loaded and the library's database answers. Open even when reads need a key, so
    load balancers can probe it."""
    try:
        await asyncio.to_thread(_database_answers, service)
    except Exception as exc:
        raise ApiError(503, f"the library database does not answer: {exc}") from None
    return Health(status="ok", model=service.models.encoder.name)


@router.get("/metrics", response_class=Response, dependencies=[Depends(require_read)],
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"}, **responses(401, 403)},
            summary="Prometheus metrics")
async def metrics(service: Service = Depends(get_service)) -> Response:
    """Request counts and latency histograms per route, text batch sizes, images indexed, model load times, and
    the library's image and vector counts."""
    body = await asyncio.to_thread(service.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
