"""The HTTP service: search (vector, keyword, hybrid), thumbnails, alt text for uploads and a minimal page
(the full API comes with its own issue)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from captioner import ImageTextModel, NotSupported
from indexer import DecodeError, decode_bytes
from indexer.decode import DEFAULT_MAX_PIXELS, ImageTooLarge
from library import ImageRecord
from search import SearchEngine, SearchQuery

PAGE = Path(__file__).parent / "page.html"
MAX_UPLOAD_BYTES = 20_000_000


class Hit(BaseModel):
    id: int
    path: str
    score: float
    width: int | None
    height: int | None
    taken_at: datetime | None
    camera: str | None
    thumbnail_url: str | None
    caption: str | None = Field(None, description="What the caption model says the image shows (use as alt text)")
    ocr_text: str | None = Field(None, description="Text read in the image by OCR")


class SearchResponse(BaseModel):
    query: str
    mode: str
    model: str
    hits: list[Hit]


class CaptionResponse(BaseModel):
    caption: str = Field(examples=["a cat lying on a wooden floor"])
    model: str = Field(description="The model that wrote the caption. `offline` means no BLIP model was available: "
                       "the caption only names ImageNet objects and quotes OCR text.", examples=["blip-base"])


def create_app(engine: SearchEngine, captioner: ImageTextModel | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> FastAPI:
    app = FastAPI(title="vlsearch", summary="Self-hosted multimodal image search")
    api = APIRouter(prefix="/api/v1")
    lock = asyncio.Lock()  # one model call at a time; the models are not built for concurrent use

    @api.get("/search", response_model=SearchResponse)
    async def search(
        q: str = Query(min_length=1, max_length=1000),
        k: int = Query(20, ge=1, le=500),
        mode: Literal["vector", "keyword", "hybrid"] = Query(
            "vector", description="vector: CLIP similarity; keyword: words in file names, captions and OCR text "
            '("quoted phrases" match exactly); hybrid: both, fused by reciprocal rank'),
    ):
        if not q.strip():
            raise HTTPException(422, "q is blank: type some words to search for")
        async with lock:
            hits = await asyncio.to_thread(engine.search, SearchQuery(text=q, k=k, mode=mode))
        fields = ("id", "path", "score", "width", "height", "taken_at", "camera", "caption", "ocr_text")
        return SearchResponse(
            query=q,
            mode=mode,
            model=engine.encoder.name,
            hits=[
                Hit(**{f: getattr(h, f) for f in fields},
                    thumbnail_url=f"/api/v1/images/{h.id}/thumbnail" if h.thumbnail else None)
                for h in hits
            ],
        )

    @api.post("/caption", response_model=CaptionResponse,
              responses={413: {"description": "upload too large (bytes or pixels)"},
                         415: {"description": "not a readable image"},
                         503: {"description": "no caption model loaded"}})
    async def caption(
        file: Annotated[UploadFile, File(description="The image to describe (JPEG, PNG, WebP, GIF, BMP, TIFF)")],
        prompt: Annotated[str | None, Form(max_length=200, description='Start of the caption, e.g. "a photo of"')]
        = None,
    ) -> CaptionResponse:
        """Alt text for any image: it need not be in the library."""
        if captioner is None:
            raise HTTPException(503, "this server was started without a caption model; restart it with "
                                "--caption-model (e.g. blip-base or offline)")
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"the upload is over {max_upload_bytes / 1e6:.0f} MB; send a smaller image")
        try:
            image, _ = await asyncio.to_thread(decode_bytes, data, max_pixels)  # large images take a while
        except ImageTooLarge:
            raise HTTPException(413, f"{file.filename or 'the upload'}: over the {max_pixels / 1e6:g} megapixels "
                                "this server decodes; send a smaller version of the image") from None
        except DecodeError as exc:
            raise HTTPException(415, f"{file.filename or 'the upload'}: {exc}") from None
        async with lock:
            try:
                text = (await asyncio.to_thread(captioner.caption, [image], prompt))[0]
            except NotSupported as exc:
                raise HTTPException(503, str(exc)) from None
        return CaptionResponse(caption=text, model=captioner.name)

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
