"""Text, image and combined search; reverse image search by upload; similar images."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi import Path as PathParam
from PIL import Image

from vlsearch.api.combinations import multipart
from vlsearch.api.deps import (
    ImageId,
    decode_base64,
    decode_upload,
    finite,
    get_service,
    one_value_each,
    read_upload,
    to_box,
    to_filters,
    to_hit,
)
from vlsearch.api.errors import ApiError, responses
from vlsearch.api.http_wording import operator_hint, say
from vlsearch.api.schemas import (
    BOX_HELP,
    FACET_HELP,
    MAX_K,
    MAX_WINDOW,
    TAG_HELP,
    WHERE_HELP,
    Condition,
    Facet,
    Filters,
    FolderPath,
    Group,
    Mode,
    SearchRequest,
    SearchResponse,
    Sort,
    TagText,
    Text,
    Weight,
    When,
    Words,
)
from vlsearch.api.security import require_read
from vlsearch.api.service import Service, in_thread
from vlsearch.captioner import NotSupported
from vlsearch.library import LibraryError
from vlsearch.search import SearchQuery
from vlsearch.search.engine import FUSION_DEPTH
from vlsearch.search.facets import FACET_DEPTH, check_facet, facet_counts

router = APIRouter(tags=["search"], dependencies=[Depends(require_read), Depends(one_value_each)])
ERRORS = responses(401, 403, 404, 409, 413, 415, 422, 503)


async def run(service: Service, started: float, **fields) -> SearchResponse:
    """Search for one page: the top hits to offset + k (and one more, to know whether a next page exists), less
    the first offset. Hybrid and date-sorted results are ranked within a fixed window (FUSION_DEPTH best
    matches), so every page of one query comes from the same ranking."""
    k, offset, facets = fields.pop("k"), fields.pop("offset"), [check(f) for f in fields.pop("facets", None) or []]
    windowed = fields.get("mode") == "hybrid" or fields.get("sort") == "date"
    depth = FUSION_DEPTH if windowed else MAX_WINDOW
    if offset + k > depth:
        what = "hybrid and date-sorted results" if windowed else "pages"
        raise ApiError(422, f"offset + k is {offset + k}; {what} reach at most {depth} hits deep: narrow the "
                       "search with filters instead")
    fetch = depth if fields.get("sort") == "date" else min(max(offset + k + 1, FACET_DEPTH if facets else 0), depth)
    try:
        query = SearchQuery(k=fetch, **fields)
    except ValueError as exc:
        raise ApiError(422, say(exc)) from None
    skipped = None
    if query.rerank and service.models.matcher is None:  # the search is still worth answering, unreranked
        skipped = f"not reranked: this server has no image-text matching model; {operator_hint('match')}"
        query = replace(query, rerank=0)
    try:
        engine = await in_thread(service.engine)  # the first call opens the library's vectors
    except LibraryError as exc:
        raise ApiError(409, say(exc)) from None
    if engine is None:
        hits = []
    else:
        # A rerank runs the matching model: it queues with captions and questions, one model call at a time.
        runner = service.run_model if query.rerank else service.run_search
        try:
            hits = await runner(engine.search, query)
        except LookupError as exc:
            raise ApiError(404, say(exc).strip("'\"")) from None
        except NotSupported as exc:
            raise ApiError(503, say(exc)) from None
        except ValueError as exc:
            raise ApiError(422, say(exc)) from None
    page = finite(hits[offset : offset + k])
    more = len(hits) > offset + k
    counted = await in_thread(facet_counts, service.library, hits, facets) if facets and hits else None
    return SearchResponse(
        model=service.models.encoder.name, mode=query.mode, k=k, offset=offset, hits=[to_hit(h) for h in page],
        reranked=bool(query.rerank and engine is not None) if fields.get("rerank") else None, rerank_note=skipped,
        next_offset=offset + k if more else None, took_ms=round((time.perf_counter() - started) * 1000, 3),
        facets=counted,
    )


def check(facet: str) -> str:
    try:
        return check_facet(facet)
    except ValueError as exc:
        raise ApiError(422, f"facets: {exc}") from None


@router.get("/search", response_model=SearchResponse, responses=ERRORS, summary="Search by text")
async def search_get(
    q: Annotated[Words, Query(min_length=1, max_length=1000, description="What to look for, in words.",
                              examples=["a dog on a beach"])],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_WINDOW)] = 0,
    not_: Annotated[list[Annotated[Text, Query(min_length=1, max_length=200)]] | None,
                    Query(alias="not", max_length=20, description="Push results away from this (repeatable).")] = None,
    path: Annotated[FolderPath | None, Query(description="Only files under this folder.")]
    = None,
    after: Annotated[When | None, Query(description="Taken on or after (YYYY-MM-DD).")] = None,
    before: Annotated[When | None, Query(description="Taken before (YYYY-MM-DD).")] = None,
    camera: Annotated[Text | None, Query(max_length=200, description="Camera make or model contains this.")] = None,
    min_score: Annotated[float | None, Query(ge=-1, le=1, allow_inf_nan=False)] = None,
    sort: Annotated[Sort, Query(description="score, or date: the best 1000 matches, newest first (pages walk "
                                "through them).")] = "score",
    mode: Annotated[Mode, Query(description="vector: CLIP similarity; keyword: words in file names, captions and "
                                'OCR text ("quoted phrases" match exactly); hybrid: both, fused by reciprocal rank')]
    = "vector",
    rerank: Annotated[int, Query(ge=0, le=200, description="Rescore the top N with the matching model.")] = 0,
    where: Annotated[list[Condition] | None, Query(max_length=20, description=WHERE_HELP + " Repeatable.")] = None,
    tag: Annotated[list[TagText] | None, Query(max_length=20, description=TAG_HELP + " Repeatable.")] = None,
    group: Annotated[Group | None, Query(description="product: the hits are products, each by its best-matching "
                                         "image; k and offset count products.")] = None,
    facet: Annotated[list[Facet] | None, Query(max_length=20, description=FACET_HELP + " Repeatable.")] = None,
    service: Service = Depends(get_service),
) -> SearchResponse:
    """Images matching words, best first. The everyday search: `GET /api/v1/search?q=red+bicycle&k=20`."""
    started = time.perf_counter()
    filters = to_filters(Filters(path=path, after=after, before=before, camera=camera, min_score=min_score,
                                 where=where or [], tags=tag or []))
    return await run(service, started, text=q, negatives=tuple(not_ or ()), filters=filters, k=k, offset=offset,
                     sort=sort, mode=mode, rerank=rerank, group=group, facets=facet)


@router.post("/search", response_model=SearchResponse, responses=ERRORS, summary="Search by text, image or both")
async def search_post(body: SearchRequest, service: Service = Depends(get_service)) -> SearchResponse:
    """Combined queries: text, an indexed image (`image_id`) or any image (`image`, base64), with weights and
    negatives; the vectors are weighted, summed, less the negatives, and normalised."""
    started = time.perf_counter()
    image: Image.Image | None = None
    if body.image is not None:
        data = decode_base64(body.image, service.settings.max_upload_bytes)
        image = await decode_upload(data, "image", service.settings.max_pixels)
    if body.image_id is not None and await in_thread(service.record, body.image_id) is None:
        raise ApiError(404, f"image {body.image_id} is not in the library")
    return await run(service, started, text=body.text, image=image, image_id=body.image_id,
                     negatives=tuple(body.negatives), text_weight=body.text_weight, image_weight=body.image_weight,
                     negative_weight=body.negative_weight, filters=to_filters(body.filters), k=body.k,
                     offset=body.offset, mode=body.mode, sort=body.sort, rerank=body.rerank, group=body.group,
                     product_id=body.product_id, facets=body.facets,
                     box=tuple(body.box) if body.box is not None else None)


@router.post("/search/image", response_model=SearchResponse, responses=ERRORS, summary="Reverse image search",
             openapi_extra=multipart(None, "file"))
async def search_image(
    file: Annotated[UploadFile, File(description="The image to look for (JPEG, PNG, WebP, GIF, BMP, TIFF).")],
    text: Annotated[Text | None, Form(max_length=1000, description="Words to combine with the image.")] = None,
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 20,
    offset: Annotated[int, Form(ge=0, le=MAX_WINDOW)] = 0,
    text_weight: Annotated[Weight, Form()] = 1.0,
    image_weight: Annotated[Weight, Form()] = 1.0,
    path: Annotated[FolderPath | None, Form(description="Only files under this folder.")]
    = None,
    min_score: Annotated[float | None, Form(ge=-1, le=1, allow_inf_nan=False)] = None,
    where: Annotated[list[Condition] | None, Form(max_length=20, description=WHERE_HELP + " Repeatable.")] = None,
    group: Annotated[Group | None, Form(description="product: the hits are products (a shopper's photo finds "
                                        "the product).")] = None,
    facet: Annotated[list[Facet] | None, Form(max_length=20, description=FACET_HELP + " Repeatable.")] = None,
    box: Annotated[Text | None, Form(max_length=200, description=BOX_HELP + " As text: 0.5,0.6,1,1.")] = None,
    service: Service = Depends(get_service),
) -> SearchResponse:
    """Upload an image, get the indexed images that look like it (optionally steered by words, or in a region)."""
    started = time.perf_counter()
    data = await read_upload(file, service.settings.max_upload_bytes)
    image = await decode_upload(data, file.filename or "the upload", service.settings.max_pixels)
    filters = to_filters(Filters(path=path, min_score=min_score, where=where or []))
    return await run(service, started, text=text, image=image, text_weight=text_weight, image_weight=image_weight,
                     filters=filters, k=k, offset=offset, group=group, facets=facet,
                     box=to_box(box))


@router.get("/images/{image_id}/similar", response_model=SearchResponse, responses=ERRORS, tags=["images"],
            summary="Images like an indexed image")
async def similar(
    image_id: ImageId,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_WINDOW)] = 0,
    path: Annotated[FolderPath | None, Query(description="Only files under this folder.")]
    = None,
    min_score: Annotated[float | None, Query(ge=-1, le=1, allow_inf_nan=False)] = None,
    service: Service = Depends(get_service),
) -> SearchResponse:
    """Nearest neighbours of an indexed image's stored vector (the image itself is left out)."""
    started = time.perf_counter()
    if await in_thread(service.record, image_id) is None:
        raise ApiError(404, f"image {image_id} is not in the library")
    filters = to_filters(Filters(path=path, min_score=min_score))
    return await run(service, started, image_id=image_id, filters=filters, k=k, offset=offset)


@router.get("/products/{product_id}/similar", response_model=SearchResponse, responses=ERRORS, tags=["products"],
            summary="Products like a product")
async def similar_products(
    product_id: Annotated[Text, PathParam(min_length=1, max_length=256, description="The catalogue's product_id.")],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_WINDOW)] = 0,
    where: Annotated[list[Condition] | None, Query(max_length=20, description=WHERE_HELP + " Repeatable.")] = None,
    service: Service = Depends(get_service),
) -> SearchResponse:
    """Products that look like this one: the mean of all its images' vectors, grouped by product, itself left out."""
    started = time.perf_counter()
    return await run(service, started, product_id=product_id, group="product", k=k, offset=offset,
                     filters=to_filters(Filters(where=where or [])))
