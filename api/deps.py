"""Helpers the routers share: the service, uploads, decoding, hits, and which files may be served."""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import os
from pathlib import Path
from types import UnionType
from typing import Annotated, Union, get_args, get_origin

from fastapi import Path as PathParam
from fastapi import Request, UploadFile
from PIL import Image
from pydantic import BeforeValidator, Field

from vlsearch.api.errors import ApiError
from vlsearch.api.schemas import MAX_ID, Hit, ProductOut
from vlsearch.api.schemas import Filters as FiltersIn
from vlsearch.api.service import Service
from vlsearch.images import DEFAULT_MAX_PIXELS, DecodeError, ImageTooLarge, decode_bytes
from vlsearch.images.geometry import box_from_text
from vlsearch.library import ImageRecord
from vlsearch.search import Filters, SearchHit
from vlsearch.search.conditions import Condition


def _decimal(value: object) -> object:
    """An id in a URL is written in decimal digits: "+1", "1.0" or " 1" is not another way to name image 1 (a
    DELETE to a mistyped URL must not forget an image)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("an id is a whole number written in digits, e.g. 42")
    return value


# The bounds as a Field before the validator: on the Path() after it they reached the schema as `ge`/`le`, which JSON
# Schema does not know, so the schema admitted ids of 0 and below.
ImageId = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_decimal),
                    PathParam(description="An image's id (from search results).")]
JobId = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_decimal), PathParam()]


def _repeatable(annotation: object) -> bool:
    """A parameter a query may give more than once: a list (maybe optional, maybe annotated)."""
    origin = get_origin(annotation)
    if origin in (list, tuple, set):
        return True
    return origin in (Union, UnionType, Annotated) and any(_repeatable(arg) for arg in get_args(annotation))


async def one_value_each(request: Request) -> None:
    """A query parameter or form field that takes one value is given once: FastAPI kept the last of
    `camera=a&camera=b` (or of two `image_id` parts), which the schema (one value, not an array) does not admit.
    A dependency after the route's key check, so a caller without a key hears that first."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    given = [(request.query_params, getattr(dependant, "query_params", []))]
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        given.append((await request.form(), getattr(dependant, "body_params", [])))  # parsed once, kept by Starlette
    for values, fields in given:
        single = {field.alias for field in fields if not _repeatable(field.field_info.annotation)}
        for name in single & {key for key, _ in values.multi_items()}:
            if len(values.getlist(name)) > 1:
                raise ApiError(422, f"{name}: give it once; it takes one value")


def get_service(request: Request) -> Service:
    return request.app.state.service


def to_hit(h: SearchHit) -> Hit:
    return Hit(id=h.id, path=h.path, score=h.score, width=h.width, height=h.height, taken_at=h.taken_at,
               camera=h.camera, caption=h.caption, ocr_text=h.ocr_text, match_score=h.match_score,
               thumbnail_url=f"/api/v1/images/{h.id}/thumbnail" if h.thumbnail else None,
               file_url=f"/api/v1/images/{h.id}/file",
               product=ProductOut(**h.product.as_dict()) if h.product is not None else None)


def finite(hits: list[SearchHit]) -> list[SearchHit]:
    """A vector with NaNs (a broken model) would make JSON invalid: such hits are dropped, not sent."""
    return [h for h in hits if math.isfinite(h.score) and (h.match_score is None or math.isfinite(h.match_score))]


def to_filters(f: FiltersIn) -> Filters:
    if f.path is not None and not os.path.isabs(f.path):
        raise ApiError(422, f"filters.path {f.path!r}: give an absolute folder path on the server")
    after, before = _naive(f.after), _naive(f.before)
    if after and before and after >= before:
        raise ApiError(422, "filters.after must be earlier than filters.before")
    return Filters(path_prefix=os.path.normpath(f.path) if f.path else None, after=after, before=before,
                   camera=f.camera, min_score=f.min_score, where=to_conditions(f.where),
                   tags=tuple(t.strip() for t in f.tags))


def to_box(text: str | None) -> tuple[float, ...] | None:
    """A box sent as form text; its range is the query's to check."""
    if text is None or not text.strip():
        return None
    try:
        return box_from_text(text)
    except ValueError:
        raise ApiError(422, f"box {text!r}: give four numbers, left,top,right,bottom as fractions, e.g. "
                       "0.5,0.6,1,1") from None


def to_conditions(where: list[str]) -> tuple[Condition, ...]:
    try:
        return tuple(Condition.parse(c) for c in where)
    except ValueError as exc:
        raise ApiError(422, f"where: {exc}") from None


def _naive(value):
    """Dates are stored as taken (camera local time, naive): compare a zoned query date by its wall time."""
    return value.replace(tzinfo=None) if value is not None and value.tzinfo else value


async def read_upload(file: UploadFile, max_bytes: int) -> bytes:
    data = await file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, f"{file.filename or 'the upload'} is over {max_bytes / 1e6:g} MB; send a smaller image")
    if not data:
        raise ApiError(415, f"{file.filename or 'the upload'} is empty; send an image file")
    return data


def decode_base64(text: str, max_bytes: int) -> bytes:
    """The bytes of a base64 image as clients really send it: a data: URL or bare, wrapped at 76 columns (MIME) or
    not, standard or URL-safe alphabet, padded or not. Anything else is a 422."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    text = "".join(text.split())  # line breaks and spaces from MIME-style wrapping
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "image: not valid base64; encode the image file's bytes with the standard (or URL-safe) "
                       "alphabet") from None
    if len(data) > max_bytes:
        raise ApiError(413, f"image is over {max_bytes / 1e6:g} MB; send a smaller image")
    if not data:
        raise ApiError(422, "image is empty")
    return data


async def decode_upload(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        image, _ = await asyncio.to_thread(decode_bytes, data, max_pixels)
    except ImageTooLarge:
        raise ApiError(413, f"{name}: over the {max_pixels / 1e6:g} megapixels this server decodes; send a smaller "
                       "version of the image") from None
    except DecodeError as exc:
        raise ApiError(415, f"{name}: {exc}") from None
    except Exception as exc:  # a decoder bug on a hostile file is the file's problem, not a 500
        raise ApiError(415, f"{name}: cannot decode the image ({type(exc).__name__})") from None
    return image


def servable_path(service: Service, row: ImageRecord) -> Path | None:
    """The file of an indexed image, if it may be served: an ok image whose real path (symlinks resolved) lies
    inside a folder the library indexes. The path comes from the library, never from the request."""
    if row.status != "ok":
        return None
    try:
        real = Path(os.path.realpath(row.path))
    except (OSError, ValueError):
        return None
    for root in service.roots():
        if real.is_relative_to(os.path.realpath(root)) and real.is_file():
            return real
    return None


async def indexed_image(service: Service, image_id: int) -> tuple[ImageRecord, Image.Image]:
    """An indexed image, decoded from its file (for captions and questions by id)."""
    row = await asyncio.to_thread(service.record, image_id)
    if row is None:
        raise ApiError(404, f"image {image_id} is not in the library")
    path = await asyncio.to_thread(servable_path, service, row)
    if path is None:
        raise ApiError(404, f"image {image_id}'s file cannot be read (it failed to index, or moved out of the "
                       "indexed folders); index it again")
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise ApiError(404, f"image {image_id}: cannot read its file: {exc.strerror or exc}") from None
    return row, await decode_upload(data, f"image {image_id}", DEFAULT_MAX_PIXELS)
