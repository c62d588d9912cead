"""The HTTP service: the FastAPI app over one library, its routers under /api/v1, and the page at /."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse

from api import errors
from api.limits import BodyLimit
from api.metrics import MetricsMiddleware
from api.routers import captions, images, jobs, search, system
from api.service import Service

PAGE = Path(__file__).parent / "page.html"

DESCRIPTION = """Search an image library by words, by example images or both; get alt text and answers about
images; index folders on the server.

Every error is JSON `{"error": CODE, "detail": WHAT TO CHANGE}`. Reads are open unless the operator sets
`auth_reads`; indexing and deleting need `Authorization: Bearer KEY` with a key from the server's settings."""


def create_app(service: Service) -> FastAPI:
    settings = service.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="vlsearch", summary="Self-hosted multimodal image search", description=DESCRIPTION,
                  version="1", lifespan=lifespan)
    app.state.service = service
    app.state.settings = settings
    errors.install(app)
    api = APIRouter(prefix="/api/v1")
    for router in (search.router, images.router, captions.router, jobs.router, system.router):
        api.include_router(router)
    app.include_router(api)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text()

    # Outermost first: metrics time everything, the body limit refuses before anything reads.
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=lambda: service.metrics)
    return app
