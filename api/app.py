"""The HTTP service: the FastAPI app over one library, its routers under /api/v1, and the page at /."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount

from vlsearch.api import contract, errors
from vlsearch.api.limits import BodyLimit
from vlsearch.api.metrics import MetricsMiddleware
from vlsearch.api.routers import captions, duplicates, evaluation, images, jobs, search, system
from vlsearch.api.service import Service

# The page is static files in the repository's web/ (no build step): index.html at /, the rest under /web/.
WEB = Path(__file__).resolve().parent.parent / "web"
# The page loads only its own files and talks only to this server: a strict policy makes an injected script inert.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
WRITES = {  # always need a key
    ("post", "/api/v1/index"), ("delete", "/api/v1/images/{image_id}"), ("post", "/api/v1/images/delete"),
}

DESCRIPTION = """Search an image library by words, by example images or both; get alt text and answers about
images; index folders on the server.

Every error is JSON `{"error": CODE, "detail": WHAT TO CHANGE}`. Reads are open unless the operator sets
`auth_reads`; indexing and deleting need `Authorization: Bearer KEY` with a key from the server's settings."""


def create_app(service: Service) -> FastAPI:
    settings = service.settings

    app = FastAPI(title="vlsearch", summary="Self-hosted multimodal image search", description=DESCRIPTION,
                  version="1")
    app.state.service = service
    app.state.settings = settings
    errors.install(app)
    api = APIRouter(prefix="/api/v1")
    routers = (search.router, images.router, captions.router, jobs.router, duplicates.router, evaluation.router,
               system.router)
    for router in routers:
        api.include_router(router)
    app.include_router(api)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = contract.exact(
                get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                            routes=app.routes), open_reads=not settings.auth_reads, writes=WRITES)
        return app.openapi_schema

    app.openapi = openapi

    @app.get("/", response_class=FileResponse, include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/web", StaticFiles(directory=WEB), name="web")

    # Outermost first: metrics time everything, the body limit refuses before anything reads.
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    routes = [(api.prefix + route.path, route.methods) for router in routers for route in router.routes]
    routes += [(route.path + "/{path:path}", ("GET", "HEAD")) if isinstance(route, Mount)
               else (route.path, getattr(route, "methods", None) or ())
               for route in app.router.routes if isinstance(getattr(route, "path", None), str)]
    app.add_middleware(MetricsMiddleware, metrics=lambda: service.metrics, routes=routes)
    return app
