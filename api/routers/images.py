"""One indexed image: its metadata and text, its thumbnail, its file, and forgetting it."""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, Depends, Response
from fastapi.responses import FileResponse, RedirectResponse
from sqlalchemy import select

from vlsearch.api.deps import ImageId, get_service, servable_path
from vlsearch.api.errors import ApiError, responses
from vlsearch.api.schemas import CaptionOut, Deleted, DeletedMany, DeleteRequest, ImageDetail, TagOut
from vlsearch.api.security import require_read, require_write
from vlsearch.api.service import Service
from vlsearch.library import Embedding, ImageRecord, Library, LibraryBusy
from vlsearch.library.schema import Caption, OcrText
from vlsearch.search.engine import image_texts
from vlsearch.search.tags import image_tags

router = APIRouter(prefix="/images", tags=["images"])
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
               "BMP": "image/bmp", "TIFF": "image/tiff", "MPO": "image/jpeg", "HEIF": "image/heif"}
IMAGE_CONTENT = {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}


def _detail(service: Service, image_id: int) -> ImageDetail | None:
    with service.library.session() as s:
        row = s.get(ImageRecord, image_id)
        if row is None:
            return None
        captions = s.execute(select(Caption.model, Caption.text, Caption.created_at)
                             .where(Caption.image_id == image_id).order_by(Caption.created_at)).all()
        best, _ = image_texts(s, [image_id])
        ocr = s.scalar(select(OcrText.text).where(OcrText.image_id == image_id))
        models = list(s.scalars(select(Embedding.model).where(Embedding.image_id == image_id)))
    return ImageDetail(
        id=row.id, path=row.path, status=row.status, error=row.error, size_bytes=row.size, sha256=row.sha256,
        width=row.display_width, height=row.display_height, format=row.format, orientation=row.orientation,
        taken_at=row.taken_at, camera_make=row.camera_make, camera_model=row.camera_model, indexed_at=row.indexed_at,
        caption=best.get(image_id), captions=[CaptionOut(model=m, text=t, created_at=c) for m, t, c in captions],
        ocr_text=ocr or None, models=models,
        tags=[TagOut(**t.as_dict()) for t in image_tags(service.library, image_id)],
        thumbnail_url=f"/api/v1/images/{row.id}/thumbnail" if row.thumbnail else None,
        file_url=f"/api/v1/images/{row.id}/file" if row.status == "ok" else None,
    )


@router.get("/{image_id}", response_model=ImageDetail, responses=responses(401, 403, 404, 422),
            dependencies=[Depends(require_read)], summary="An image's metadata, caption and OCR text")
async def image_detail(image_id: ImageId, service: Service = Depends(get_service)) -> ImageDetail:
    detail = await asyncio.to_thread(_detail, service, image_id)
    if detail is None:
        raise ApiError(404, f"image {image_id} is not in the library")
    return detail


def _thumbnail_path(service: Service, image_id: int):
    row = service.record(image_id)
    path = service.library.root / row.thumbnail if row is not None and row.thumbnail else None
    return path if path is not None and path.is_file() else None


@router.get("/{image_id}/thumbnail", response_class=FileResponse, dependencies=[Depends(require_read)],
            responses={200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "a JPEG at most 256 px on its long side"},
                       **responses(401, 403, 404, 422)},
            summary="A small JPEG of the image")
async def thumbnail(image_id: ImageId, service: Service = Depends(get_service)) -> FileResponse:
    path = await asyncio.to_thread(_thumbnail_path, service, image_id)
    if path is None:
        raise ApiError(404, f"image {image_id} has no thumbnail (unknown id, or a file that could not be read)")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/{image_id}/file", response_class=FileResponse, dependencies=[Depends(require_read)],
            responses={200: {**IMAGE_CONTENT, "description": "the original file"},
                       307: {"description": "an image indexed from a URL (`vlsearch index --ray --list`): its URL"},
                       **responses(401, 403, 404, 422)},
            summary="The original image file")
async def original(image_id: ImageId, service: Service = Depends(get_service)) -> Response:
    """Only indexed images whose files lie inside the library's indexed folders (symlinks resolved) are served;
    no path ever comes from the request. An image indexed from an http(s) URL is a redirect to that URL."""
    row = await asyncio.to_thread(service.record, image_id)
    if row is None:
        raise ApiError(404, f"image {image_id} is not in the library")
    if row.path.startswith(("http://", "https://")) and row.status == "ok":
        return RedirectResponse(row.path, status_code=307)
    path = await asyncio.to_thread(servable_path, service, row)
    if path is None:
        raise ApiError(404, f"image {image_id}'s file is not available: it could not be read when indexed, or it is "
                       "gone or now lies outside the indexed folders")
    # Starlette percent-encodes a name that is not plain ASCII (RFC 6266 filename*=utf-8''...), so quotes,
    # newlines or accents in a file name can neither break the header nor be lost.
    name = os.fsdecode(path.name).encode("utf-8", "replace").decode()  # non-UTF-8 names: replacement characters
    return FileResponse(path, media_type=MEDIA_TYPES.get(row.format or "", "application/octet-stream"),
                        filename=name, content_disposition_type="inline",
                        headers={"X-Content-Type-Options": "nosniff"})


# HEAD answers as GET without the body (caches and link checkers send it); HTTP implies it, so the schema need not
# list it twice.
for _path, _endpoint in (("/{image_id}/thumbnail", thumbnail), ("/{image_id}/file", original)):
    router.add_api_route(_path, _endpoint, methods=["HEAD"], include_in_schema=False,
                         dependencies=[Depends(require_read)])


def _delete(service: Service, ids: list[int]) -> tuple[list[Deleted], list[int]]:
    """Forget images; returns (deleted, missing ids), each id reported deleted by exactly one request. Many ids
    cost one FAISS update, not one each."""
    ids = list(dict.fromkeys(ids))
    with service.library.session() as s:
        paths = dict(s.execute(select(ImageRecord.id, ImageRecord.path).where(ImageRecord.id.in_(ids))).all())
    gone: set[int] = set()
    if paths:
        # One delete at a time in this server (they would only fight over the writer lock), on a library object
        # of its own, so the searches' FAISS indexes are never changed under them.
        with service.delete_lock:
            writer = Library.open(service.library.root, create=False)
            try:
                with writer.writer("the vlsearch server deleting images"):
                    deleted = writer.forget_images(list(paths))
            except LibraryBusy:
                # An index job holds the library: the rows go now; its FAISS save sees the count differ and
                # rebuilds, and searches never show a deleted row (hits are read from SQLite).
                deleted, _ = writer.delete_images(list(paths))
            finally:
                writer.close()
        gone = set(deleted)
    return [Deleted(id=i, path=paths[i]) for i in ids if i in gone], [i for i in ids if i not in gone]


@router.delete("/{image_id}", response_model=Deleted, dependencies=[Depends(require_write)],
               responses=responses(401, 403, 404, 422), summary="Forget an image")
async def delete_image(image_id: ImageId, service: Service = Depends(get_service)) -> Deleted:
    """Removes the image's row, vectors, captions and OCR text from SQLite and its vectors from FAISS. The file
    itself is untouched: indexing its folder again brings it back unless the file is gone.

    Each delete rewrites the library's FAISS file (and searches reload it), which takes seconds at a million
    images: to forget many images, send them together to `POST /images/delete`."""
    deleted, _ = await asyncio.to_thread(_delete, service, [image_id])
    if not deleted:
        raise ApiError(404, f"image {image_id} is not in the library")
    return deleted[0]


@router.post("/delete", response_model=DeletedMany, dependencies=[Depends(require_write)],
             responses=responses(401, 403, 413, 422), summary="Forget many images at once")
async def delete_images(body: DeleteRequest, service: Service = Depends(get_service)) -> DeletedMany:
    """As `DELETE /images/{id}` for up to 1000 ids, with one FAISS update for all of them. Ids not in the library
    are listed in `missing` rather than failing the request, so a retried request is harmless."""
    deleted, missing = await asyncio.to_thread(_delete, service, body.ids)
    return DeletedMany(deleted=deleted, missing=missing)
