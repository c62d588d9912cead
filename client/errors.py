"""What a call to a vlsearch server can fail with: the server's answer as a typed exception carrying its `error` code
and `detail` (what to change), or the connection failing."""

from __future__ import annotations


class VlsearchError(Exception):
    """Base of every error the client raises."""


class ConnectionFailed(VlsearchError):
    """The server could not be reached (or stopped answering) after the client's retries."""


class ApiError(VlsearchError):
    """The server answered with an error: `status` (HTTP), `error` (its code) and `detail` (what to change)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


class Unauthorized(ApiError):
    """401: this call needs an API key (`Client(key=...)`)."""


class Forbidden(ApiError):
    """403: the key is not accepted, or the path is outside the server's index roots."""


class NotFound(ApiError):
    """404: no such image, job, product or file."""


class Conflict(ApiError):
    """409: the library is busy (an index job runs) or cannot answer this yet."""


class TooLarge(ApiError):
    """413: the upload or body is over the server's limit."""


class Unsupported(ApiError):
    """415: not an image format the server decodes."""


class Invalid(ApiError):
    """422: the request breaks a rule; `detail` says which."""


class RateLimited(ApiError):
    """429: too many requests; the client retries these before raising."""


class Unavailable(ApiError):
    """503: the server lacks the model this call needs, or is not ready; retried before raising."""


BY_STATUS: dict[int, type[ApiError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
                                        413: TooLarge, 415: Unsupported, 422: Invalid, 429: RateLimited,
                                        503: Unavailable}


def error_for(status: int, body: object) -> ApiError:
    """The typed error of an error answer (the server's `{"error", "detail"}`, or whatever came back)."""
    error, detail = "http_error", str(body)[:500]
    if isinstance(body, dict):
        error, detail = str(body.get("error", error)), str(body.get("detail", detail))
    return BY_STATUS.get(status, ApiError)(status, error, detail)
