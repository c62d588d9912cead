"""Alt text for any image, answers about one image (VQA), and questions over the whole collection."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from PIL import Image
from pydantic import Field

from vlsearch.api.answer_schemas import (
    AskRequest,
    AskResponse,
    BatchCaptions,
    BatchItem,
    CaptionResult,
    Finding,
    VqaAnswer,
)
from vlsearch.api.combinations import ONE_IMAGE, SOME_IMAGES, multipart
from vlsearch.api.deps import (
    decode_upload,
    finite,
    get_service,
    indexed_image,
    one_value_each,
    read_upload,
    to_filters,
    to_hit,
)
from vlsearch.api.errors import ApiError, responses
from vlsearch.api.http_wording import operator_hint, say
from vlsearch.api.schemas import MAX_ID, Text
from vlsearch.api.security import require_read
from vlsearch.api.service import Service, in_thread
from vlsearch.captioner import ImageTextModel, ModelSuite, NotSupported
from vlsearch.library import LibraryError
from vlsearch.search.ask import ask_collection
from vlsearch.search.engine import image_texts

router = APIRouter(tags=["captions and questions"], dependencies=[Depends(require_read), Depends(one_value_each)])
ImageIdForm = Annotated[int | None, Form(ge=1, le=MAX_ID, description="An indexed image, instead of an upload.")]
UploadForm = Annotated[UploadFile | None, File(description="The image (JPEG, PNG, WebP, GIF, BMP, TIFF).")]
PromptForm = Annotated[Text | None, Form(max_length=200, description='Start of the caption, e.g. "a photo of".')]


def _need(model: ImageTextModel | None, what: str, task: str) -> ImageTextModel:
    if model is None:
        raise ApiError(503, f"this server has no {what}; {operator_hint(task)}")
    return model


def _one_image(file: UploadFile | None, image_id: int | None) -> None:
    """The request names one image: checked before anything else, a model's absence included."""
    if (file is None) == (image_id is None):
        raise ApiError(422, "send either an image file (field `file`) or the id of an indexed image (`image_id`)")


async def _image(service: Service, file: UploadFile | None, image_id: int | None) -> tuple[Image.Image, int | None]:
    """The one image `_one_image` let through: the upload decoded, or the indexed image read."""
    if file is not None:
        data = await read_upload(file, service.settings.max_upload_bytes)
        return await decode_upload(data, file.filename or "the upload", service.settings.max_pixels), None
    _, image = await indexed_image(service, image_id)
    return image, image_id


def _stored_caption(service: Service, image_id: int) -> tuple[str, str] | None:
    """(caption, model) stored for an indexed image, preferring the server's caption model's."""
    from sqlalchemy import select

    from vlsearch.library.schema import Caption

    with service.library.session() as s:
        rows = dict(s.execute(select(Caption.model, Caption.text).where(Caption.image_id == image_id)).all())
        if not rows:
            return None
        mine = service.models.captioner.name if service.models.captioner else None
        if mine in rows:
            return rows[mine], mine
        best = image_texts(s, [image_id])[0][image_id]
    return best, next(m for m, t in rows.items() if t == best)


async def _caption(service: Service, images: list[Image.Image], prompt: str | None) -> list[str]:
    model = _need(service.models.captioner, "caption model", "caption")
    try:
        return await service.run_model(model.caption, images, prompt)
    except NotSupported as exc:
        raise ApiError(503, say(exc)) from None


@router.post("/caption", response_model=CaptionResult, responses=responses(401, 403, 404, 413, 415, 422, 503),
             summary="Alt text for an image", openapi_extra=multipart(ONE_IMAGE, "file"))
async def caption(file: UploadForm = None, image_id: ImageIdForm = None, prompt: PromptForm = None,
                  service: Service = Depends(get_service)) -> CaptionResult:
    """A caption for an uploaded image (it need not be in the library) or for an indexed one (its stored caption
    when it has one and no prompt is given; otherwise one is written now)."""
    if image_id is not None and file is None and not prompt:
        if await asyncio.to_thread(service.record, image_id) is None:
            raise ApiError(404, f"image {image_id} is not in the library")
        stored = await asyncio.to_thread(_stored_caption, service, image_id)
        if stored is not None:
            return CaptionResult(caption=stored[0], model=stored[1], image_id=image_id, stored=True)
    _one_image(file, image_id)
    _need(service.models.captioner, "caption model", "caption")
    image, image_id = await _image(service, file, image_id)
    text = (await _caption(service, [image], prompt))[0]
    return CaptionResult(caption=text, model=service.models.captioner.name, image_id=image_id)


@router.post("/caption/batch", response_model=BatchCaptions, responses=responses(401, 403, 413, 422, 503),
             summary="Alt text for many images", openapi_extra=multipart(SOME_IMAGES))
async def caption_batch(
    files: Annotated[list[UploadFile] | None, File(description="Images to caption.")] = None,
    image_ids: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None,
                         Form(description="Indexed images to caption (stored captions are returned as they are).")]
    = None,
    prompt: PromptForm = None,
    service: Service = Depends(get_service),
) -> BatchCaptions:
    """Several images in one request: one result per item, in order (files first, then image_ids). An item that
    cannot be captioned (a file that is no image) carries its own error; the others are unaffected."""
    files, image_ids = files or [], image_ids or []
    if not files and not image_ids:
        raise ApiError(422, "send images as `files` fields, indexed image ids as `image_ids` fields, or both")
    if len(files) + len(image_ids) > service.settings.max_batch:
        raise ApiError(413, f"{len(files) + len(image_ids)} images in one request; send at most "
                       f"{service.settings.max_batch} per batch")
    _need(service.models.captioner, "caption model", "caption")
    results: list[BatchItem] = []
    todo: list[tuple[BatchItem, Image.Image]] = []
    for i, f in enumerate(files):
        item = BatchItem(index=i, filename=f.filename)
        try:
            data = await read_upload(f, service.settings.max_upload_bytes)
            todo.append((item, await decode_upload(data, f.filename or f"file {i}", service.settings.max_pixels)))
        except ApiError as exc:
            item.error, item.detail = exc.code, exc.detail
        results.append(item)
    for j, image_id in enumerate(image_ids, start=len(files)):
        item = BatchItem(index=j, image_id=image_id)
        results.append(item)
        stored = await asyncio.to_thread(_stored_caption, service, image_id) if not prompt else None
        if stored is not None:
            item.caption, item.model, item.stored = stored[0], stored[1], True
            continue
        try:
            todo.append((item, (await indexed_image(service, image_id))[1]))
        except ApiError as exc:
            item.error, item.detail = exc.code, exc.detail
    if todo:
        texts = await _caption(service, [image for _, image in todo], prompt)
        for (item, _), text in zip(todo, texts, strict=True):
            item.caption, item.model = text, service.models.captioner.name
    return BatchCaptions(results=results)


@router.post("/vqa", response_model=VqaAnswer, responses=responses(401, 403, 404, 413, 415, 422, 503),
             summary="Ask a question about one image", openapi_extra=multipart(ONE_IMAGE, "file"))
async def vqa(
    question: Annotated[Text, Form(min_length=1, max_length=500, examples=["what does the sign say?"])],
    file: UploadForm = None,
    image_id: ImageIdForm = None,
    service: Service = Depends(get_service),
) -> VqaAnswer:
    """Visual question answering on an upload or an indexed image. Without a VQA model the offline fallback answers
    only questions about text in the image; others get a 422 that names the model to install."""
    if not any(c.isalnum() for c in question):
        raise ApiError(422, "question has no words; ask e.g. \"what colour is the car?\"")
    _one_image(file, image_id)
    model = _need(service.models.answerer, "VQA model", "answer")
    image, image_id = await _image(service, file, image_id)
    try:
        answer = (await service.run_model(model.answer, [image], [question]))[0]
    except NotSupported as exc:
        raise ApiError(422, say(exc), code="unanswerable") from None
    return VqaAnswer(question=question, answer=answer, model=model.name, image_id=image_id)


@router.post("/ask", response_model=AskResponse, responses=responses(401, 403, 409, 422),
             summary="Ask the whole collection")
async def ask(body: AskRequest, service: Service = Depends(get_service)) -> AskResponse:
    """"which photos show a dog on a beach?": CLIP finds candidates, a VQA model (or image-text matching model)
    checks each, and the images it says yes to come back best first, with the answer and its probability. Without
    either model, questions about text are answered from OCR, and the rest by search alone (`verified: false`)."""
    try:
        engine = await in_thread(service.engine)
    except LibraryError as exc:
        raise ApiError(409, say(exc)) from None
    if engine is None:
        raise ApiError(409, "the library holds no images yet; index some first (POST /api/v1/index)")
    suite = ModelSuite(answerer=service.models.answerer, matcher=service.models.matcher)
    try:
        result = await service.run_model(
            lambda: ask_collection(engine, suite, body.question, k=body.k, candidates=body.candidates,
                                   threshold=body.threshold, filters=to_filters(body.filters)))
    except ValueError as exc:
        raise ApiError(422, say(exc)) from None
    findings = [f for f in result.findings if f.hit in finite([f.hit])]
    return AskResponse(
        question=result.question, retrieval_query=result.retrieval_query, check=result.check, method=result.method,
        model=result.model, candidates=result.candidates, verified=result.verified,
        results=[Finding(**to_hit(f.hit).model_dump(), answer=f.answer, answer_score=f.score) for f in findings],
    )
