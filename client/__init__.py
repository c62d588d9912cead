"""A typed Python client for a vlsearch server: `Client` (sync) and `AsyncClient`, every operation of the API, the
server's own pydantic models as answers, typed errors carrying the server's `error` and `detail`.

    from vlsearch.client import Client

    with Client("http://localhost:8000", key="...") as api:
        for hit in api.search("a dog on a beach", k=5).hits:
            print(hit.score, hit.path)
"""

from vlsearch.client.client import AsyncClient, Client, Retries
from vlsearch.client.errors import (
    ApiError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unsupported,
    VlsearchError,
)

__all__ = ["ApiError", "AsyncClient", "Client", "Conflict", "ConnectionFailed", "Forbidden", "Invalid", "NotFound",
           "RateLimited", "Retries", "TooLarge", "Unauthorized", "Unavailable", "Unsupported", "VlsearchError"]
