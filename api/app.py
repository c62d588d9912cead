"""The HTTP service: for now a text search endpoint, thumbnails and a minimal page (the full API comes next)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel
from sqlalchemy import select

from library import ImageRecord
from search import SearchEngine, SearchQuery

PAGE = Path(__file__).parent / "page.html"


class Hit(BaseModel):
    id: int
    path: str
    score: float
    width: int | None
    height: int | None
    taken_at: datetime | None
    camera: str | None
    thumbnail_url: str | None


class SearchResponse(BaseModel):
    query: str
    model: str
    hits: list[Hit]


def create_app(engine: SearchEngine) -> FastAPI:
    app = FastAPI(title="vlsearch", summary="Self-hosted multimodal image search")
    api = APIRouter(prefix="/api/v1")
    lock = asyncio.Lock()  # one model call at a time; the encoder is not built for concurrent use

    @api.get("/search", response_model=SearchResponse)
    async def search(q: str = Query(min_length=1, max_length=1000), k: int = Query(20, ge=1, le=500)):
        if not q.strip():
            raise HTTPException(422, "q is blank: type some words to search for")
        async with lock:
            hits = await asyncio.to_thread(engine.search, SearchQuery(text=q, k=k))
        return SearchResponse(
            query=q,
            model=engine.encoder.name,
            hits=[
                Hit(**{f: getattr(h, f) for f in ("id", "path", "score", "width", "height", "taken_at", "camera")},
                    thumbnail_url=f"/api/v1/images/{h.id}/thumbnail" if h.thumbnail else None)
                for h in hits
            ],
        )

    @api.get("/images/{image_id}/thumbnail", response_class=FileResponse)
    def thumbnail(image_id: int):
        with engine.library.session() as s:
            rel = s.scalar(select(ImageRecord.thumbnail).where(ImageRecord.id == image_id))
        path = engine.library.root / rel if rel else None
        if path is None or not path.is_file():
            raise HTTPException(404, f"image {image_id} has no thumbnail (unknown id, or unreadable file)")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text()

    app.include_router(api)
    return app
