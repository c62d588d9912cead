"""Every operation of the API (tests/test_client.py checks the list against the server's schema), as methods that
describe the call and hand it to `self._send`: the sync client returns the answer, the async one a coroutine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlsearch.api.answer_schemas import AskRequest, AskResponse, BatchCaptions, CaptionResult, VqaAnswer
from vlsearch.api.review_schemas import DuplicatesOut, EvalRequest, EvalResponse
from vlsearch.api.schemas import (
    Deleted,
    DeletedMany,
    DeleteRequest,
    Health,
    ImageDetail,
    IndexRequest,
    JobOut,
    SearchRequest,
    SearchResponse,
    Stats,
)
from vlsearch.client.calls import Call, ImageInput, clean, upload


class Operations:
    """The API's operations; `_send(call)` is the client's."""

    def _send(self, call: Call) -> Any:
        raise NotImplementedError

    # -- search ---------------------------------------------------------------------------------------------------

    def search(self, q: str, *, k: int = 20, offset: int = 0, mode: str | None = None, path: str | None = None,
               tags: Sequence[str] = (), where: Sequence[str] = (), facets: Sequence[str] = (),
               **options: Any) -> SearchResponse:
        """GET /search: words. `options`: the endpoint's other parameters (not, after, before, camera, min_score,
        sort, rerank, group)."""
        params = clean({"q": q, "k": k, "offset": offset, "mode": mode, "path": path, "tag": list(tags) or None,
                        "where": list(where) or None, "facet": list(facets) or None, **options})
        return self._send(Call("GET", "/search", SearchResponse, params=params))

    def search_combined(self, request: SearchRequest | dict[str, Any]) -> SearchResponse:
        """POST /search: text, an indexed image or an uploaded one (base64), weights and negatives."""
        body = request if isinstance(request, SearchRequest) else SearchRequest.model_validate(request)
        return self._send(Call("POST", "/search", SearchResponse, json=clean({"b": body})["b"]))

    def search_image(self, image: ImageInput, *, text: str | None = None, k: int = 20, offset: int = 0,
                     **options: Any) -> SearchResponse:
        """POST /search/image: reverse image search with an upload (a path, bytes or a PIL image). `options`:
        text_weight, image_weight, path, min_score, where, group, facet, box."""
        data = clean({"text": text, "k": k, "offset": offset, **options})
        return self._send(Call("POST", "/search/image", SearchResponse, data=data, files=[upload("file", image)]))

    def similar(self, image_id: int, *, k: int = 20, offset: int = 0, path: str | None = None,
                min_score: float | None = None) -> SearchResponse:
        """GET /images/{id}/similar."""
        params = clean({"k": k, "offset": offset, "path": path, "min_score": min_score})
        return self._send(Call("GET", "/images/{image_id}/similar", SearchResponse, {"image_id": image_id}, params))

    def similar_products(self, product_id: str, *, k: int = 20, offset: int = 0,
                         where: Sequence[str] = ()) -> SearchResponse:
        """GET /products/{product_id}/similar."""
        params = clean({"k": k, "offset": offset, "where": list(where) or None})
        return self._send(Call("GET", "/products/{product_id}/similar", SearchResponse,
                               {"product_id": product_id}, params))

    # -- images ---------------------------------------------------------------------------------------------------

    def image(self, image_id: int) -> ImageDetail:
        """GET /images/{id}: metadata, caption, OCR text and tags."""
        return self._send(Call("GET", "/images/{image_id}", ImageDetail, {"image_id": image_id}))

    def thumbnail(self, image_id: int) -> bytes:
        """GET /images/{id}/thumbnail: a JPEG."""
        return self._send(Call("GET", "/images/{image_id}/thumbnail", "bytes", {"image_id": image_id}))

    def file(self, image_id: int) -> bytes:
        """GET /images/{id}/file: the original file's bytes (an image indexed from a URL: fetched from it)."""
        return self._send(Call("GET", "/images/{image_id}/file", "bytes", {"image_id": image_id}))

    def forget(self, image_id: int) -> Deleted:
        """DELETE /images/{id} (needs a key): the library forgets the image; the file stays."""
        return self._send(Call("DELETE", "/images/{image_id}", Deleted, {"image_id": image_id}))

    def forget_many(self, image_ids: Sequence[int]) -> DeletedMany:
        """POST /images/delete (needs a key): up to 1000 images at once."""
        body = DeleteRequest(ids=list(image_ids)).model_dump(mode="json")
        return self._send(Call("POST", "/images/delete", DeletedMany, json=body))

    # -- captions and questions -----------------------------------------------------------------------------------

    def caption(self, image: ImageInput | None = None, *, image_id: int | None = None,
                prompt: str | None = None) -> CaptionResult:
        """POST /caption: alt text for an upload or an indexed image."""
        files = [upload("file", image)] if image is not None else None
        return self._send(Call("POST", "/caption", CaptionResult, data=clean({"image_id": image_id, "prompt": prompt}),
                               files=files))

    def caption_batch(self, images: Sequence[ImageInput] = (), *, image_ids: Sequence[int] = (),
                      prompt: str | None = None) -> BatchCaptions:
        """POST /caption/batch: one result per item, files first, then image_ids."""
        files = [upload("files", image) for image in images] or None
        data = clean({"image_ids": list(image_ids) or None, "prompt": prompt})
        return self._send(Call("POST", "/caption/batch", BatchCaptions, data=data, files=files))

    def vqa(self, question: str, image: ImageInput | None = None, *, image_id: int | None = None) -> VqaAnswer:
        """POST /vqa: a question about one image."""
        files = [upload("file", image)] if image is not None else None
        data = clean({"question": question, "image_id": image_id})
        return self._send(Call("POST", "/vqa", VqaAnswer, data=data, files=files))

    def ask(self, question: str, **options: Any) -> AskResponse:
        """POST /ask: a question over the whole collection. `options`: AskRequest's other fields."""
        body = AskRequest.model_validate({"question": question, **options}).model_dump(mode="json", exclude_none=True)
        return self._send(Call("POST", "/ask", AskResponse, json=body))

    # -- review ---------------------------------------------------------------------------------------------------

    def duplicates(self, *, kinds: Sequence[str] = (), limit: int = 50, offset: int = 0,
                   copy_threshold: float | None = None, near_threshold: float | None = None) -> DuplicatesOut:
        """GET /duplicates: groups of duplicate images, each with its suggested keeper."""
        params = clean({"kind": list(kinds) or None, "limit": limit, "offset": offset,
                        "copy_threshold": copy_threshold, "near_threshold": near_threshold})
        return self._send(Call("GET", "/duplicates", DuplicatesOut, params=params))

    def evaluate(self, cases: Sequence[dict[str, Any]], *, modes: Sequence[str] = (), k: int = 10,
                 photos: str | None = None) -> EvalResponse:
        """POST /eval: the quality report over labelled cases."""
        body = EvalRequest.model_validate(clean({"cases": list(cases), "modes": list(modes) or None, "k": k,
                                                 "photos": photos}))
        return self._send(Call("POST", "/eval", EvalResponse, json=body.model_dump(mode="json", exclude_none=True)))

    # -- indexing -------------------------------------------------------------------------------------------------

    def index(self, paths: Sequence[str], **options: Any) -> JobOut:
        """POST /index (needs a key): index folders on the server, in the background; poll `job`."""
        body = IndexRequest.model_validate({"paths": list(paths), **options}).model_dump(mode="json")
        return self._send(Call("POST", "/index", JobOut, json=body))

    def jobs(self) -> list[JobOut]:
        """GET /jobs: this server run's index jobs, newest first."""
        return self._send(Call("GET", "/jobs", list[JobOut]))

    def job(self, job_id: int) -> JobOut:
        """GET /jobs/{id}: an index job's progress."""
        return self._send(Call("GET", "/jobs/{job_id}", JobOut, {"job_id": job_id}))

    # -- system ---------------------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        """GET /stats: library counts and the models loaded."""
        return self._send(Call("GET", "/stats", Stats))

    def health(self) -> Health:
        """GET /healthz: liveness and readiness."""
        return self._send(Call("GET", "/healthz", Health))

    def metrics(self) -> str:
        """GET /metrics: Prometheus text."""
        return self._send(Call("GET", "/metrics", "text"))
