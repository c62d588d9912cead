"""Every error the API returns is JSON `{"error": CODE, "detail": WHAT TO CHANGE}`, whatever raised it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error",
    501: "not_implemented", 503: "unavailable",
}


PATTERN_WORDS = {r"\S": "is blank: type some words", "^/": "give an absolute path on the server (starting with /)"}


class ErrorBody(BaseModel):
    error: str = Field(description="A stable code: not_found, invalid_request, too_large, unauthorized, ...",
                       examples=["invalid_request"])
    detail: str = Field(description="What went wrong and what to change, in words.",
                        examples=["k: Input should be less than or equal to 1000"])


class ApiError(HTTPException):
    """An HTTP error with a specific code (default: the status's generic one)."""

    def __init__(self, status: int, detail: str, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(status, detail, headers)
        self.code = code or CODES.get(status, "error")


def responses(*statuses: int) -> dict[int | str, dict]:
    """The `responses=` of an endpoint: each status documented with the error body."""
    text = {
        400: "malformed request", 401: "no or wrong API key", 403: "not allowed", 404: "no such image or job",
        409: "conflicts with the library's state", 413: "too large", 415: "not a readable image",
        422: "invalid parameters", 503: "the model this needs is not loaded",
    }
    return {s: {"model": ErrorBody, "description": text.get(s, "error")} for s in statuses}


def _body(status: int, detail: str, code: str | None = None) -> dict:
    return {"error": code or CODES.get(status, "error"), "detail": detail}


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("query", "body", "path", "header", "form")]
    return ".".join(parts) or "request"


def install(app: FastAPI) -> None:
    """Replace FastAPI's error bodies with ours."""

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 405:
            detail = "this path does not take that HTTP method; see /docs"
        elif exc.status_code == 404 and detail == "Not Found":
            detail = "no such endpoint; the API lives under /api/v1 (see /docs)"
        return JSONResponse(_body(exc.status_code, detail, getattr(exc, "code", None)), exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                problems.append("the body is not valid JSON")
                continue
            msg = PATTERN_WORDS.get((err.get("ctx") or {}).get("pattern"), err.get("msg", "invalid"))
            problems.append(f"{_field(tuple(err.get('loc', ())))}: {msg}")
        return JSONResponse(_body(422, "; ".join(problems) or "invalid request"), 422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(_body(500, f"the server failed ({type(exc).__name__}); this is a bug, please report "
                                  "it with the request that caused it"), 500)
