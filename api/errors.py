"""Every error the API returns is JSON `{"error": CODE, "detail": WHAT TO CHANGE}`, whatever raised it."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from vlsearch.api.combinations import ABSOLUTE, WORDS

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error",
    501: "not_implemented", 503: "unavailable",
}


PATTERN_WORDS = {WORDS["pattern"]: "is blank: type some words",
                 ABSOLUTE: "give an absolute path on the server (starting with /)"}


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


DESCRIPTIONS = {  # what each error status means, in the schema
    400: "malformed request", 401: "no or wrong API key", 403: "not allowed", 404: "no such image or job",
    409: "conflicts with the library's state", 413: "too large", 415: "not a readable image",
    422: "invalid parameters", 503: "the model this needs is not loaded",
}


def responses(*statuses: int) -> dict[int | str, dict]:
    """The `responses=` of an endpoint: each status documented with the error body."""
    return {s: {"model": ErrorBody, "description": DESCRIPTIONS.get(s, "error")} for s in statuses}


def _body(status: int, detail: str, code: str | None = None) -> dict:
    return {"error": code or CODES.get(status, "error"), "detail": detail}


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("query", "body", "path", "header", "form")]
    return ".".join(parts) or "request"


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the schema documents at `path`. Starlette's 405 names only the first route that matched the
    path: /images/{image_id} (GET) for /images/delete, which takes POST."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        if re.fullmatch(_path_pattern(template, operations), path):
            methods |= {method.upper() for method in operations}
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))  # Starlette answers HEAD wherever GET


def _path_pattern(template: str, operations: dict) -> str:
    """A path template as a regex: an integer parameter (an id) matches digits only, any other a segment."""
    integers = {p["name"] for op in operations.values() for p in op.get("parameters", [])
                if p.get("in") == "path" and p.get("schema", {}).get("type") == "integer"}
    return "".join(("[0-9]+" if part[1:-1] in integers else "[^/]+") if part.startswith("{") else re.escape(part)
                   for part in re.split(r"(\{[^/]+?\})", template))


def install(app: FastAPI) -> None:
    """Replace FastAPI's error bodies with ours."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = exc.headers
        if exc.status_code == 405 and (allowed := allowed_methods(app, request.url.path)):
            detail = f"this path does not take {request.method}, only {', '.join(allowed)} (see /docs)"
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        elif exc.status_code == 405:  # the page and its files: Starlette's own Allow stands
            detail = "this path does not take that HTTP method; see /docs"
        elif exc.status_code == 404 and detail == "Not Found":
            detail = "no such endpoint; the API lives under /api/v1 (see /docs)"
        return JSONResponse(_body(exc.status_code, detail, getattr(exc, "code", None)), exc.status_code,
                            headers=headers)

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
