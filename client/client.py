"""The clients: `Client` (sync) and `AsyncClient`, over httpx, with the API key, retries with backoff (reads on 429,
503 and lost connections; writes only when surely unsent, or on 429), errors raised typed (errors.py), and paging
that follows `next_offset`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from vlsearch.api.schemas import Hit
from vlsearch.client.calls import Call
from vlsearch.client.errors import ConnectionFailed, error_for
from vlsearch.client.operations import Operations

RETRY_STATUS = (429, 503)
# A call that changes or costs something (POST, DELETE) is sent again only when it surely did not reach the server
# (the connection was refused) or was refused unread (429): a timeout after an index job started must not start
# another, nor a repeated delete report nothing deleted.
SAFE_METHODS = ("GET", "HEAD")
UNSENT = (httpx.ConnectError, httpx.ConnectTimeout)


def retryable(call: Call, failure: httpx.TransportError | None, status: int | None) -> bool:
    if call.method in SAFE_METHODS:
        return failure is not None or status in RETRY_STATUS
    return isinstance(failure, UNSENT) or status == 429
TIMEOUT = httpx.Timeout(60.0, connect=10.0)  # a caption on a CPU can take seconds; a first search loads the index


class Retries:
    """How often and how long to try again: `attempts` in all, waiting `backoff` x 2^n seconds (or the server's
    Retry-After, when it says) between them."""

    def __init__(self, attempts: int = 4, backoff: float = 0.5) -> None:
        self.attempts, self.backoff = max(1, attempts), backoff

    def wait(self, attempt: int, response: httpx.Response | None) -> float:
        after = response.headers.get("retry-after") if response is not None else None
        if after and after.replace(".", "", 1).isdigit():
            return min(float(after), 60.0)
        return self.backoff * 2**attempt


def _answer(call: Call, response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        raise error_for(response.status_code, body)
    body = response.json() if call.answer not in ("bytes", "text") else None
    return call.read(response.content, response.text, body)


def _request(call: Call) -> dict[str, Any]:
    return {"method": call.method, "url": call.url, "params": call.params, "json": call.json, "data": call.data,
            "files": call.files}


class Client(Operations):
    """A vlsearch server's API: `Client("http://host:8000", key="...")`. Every method is an operation of the API
    and returns its answer as the server's own pydantic model; errors are ApiError subclasses."""

    def __init__(self, url: str, key: str | None = None, *, retries: Retries | None = None,
                 timeout: httpx.Timeout | float = TIMEOUT, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport,
                                 follow_redirects=True)
        self.retries = retries or Retries()

    def _send(self, call: Call) -> Any:
        for attempt in range(self.retries.attempts):
            last = attempt == self.retries.attempts - 1
            try:
                response = self.http.request(**_request(call))
            except httpx.TransportError as exc:
                if last or not retryable(call, exc, None):
                    raise ConnectionFailed(f"{call.method} {call.url}: {exc}") from exc
                time.sleep(self.retries.wait(attempt, None))
                continue
            if not last and retryable(call, None, response.status_code):
                time.sleep(self.retries.wait(attempt, response))
                continue
            return _answer(call, response)
        raise AssertionError("unreachable")

    def iter_search(self, q: str, *, page_size: int = 100, **options: Any) -> Iterator[Hit]:
        """Every hit of a text search, page after page, as long as the server says there is a next one."""
        offset: int | None = 0
        while offset is not None:
            page = self.search(q, k=page_size, offset=offset, **options)
            yield from page.hits
            offset = page.next_offset

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(Operations):
    """As Client, for asyncio: every operation is a coroutine (`await client.search("a cat")`)."""

    def __init__(self, url: str, key: str | None = None, *, retries: Retries | None = None,
                 timeout: httpx.Timeout | float = TIMEOUT, transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout,
                                      transport=transport, follow_redirects=True)
        self.retries = retries or Retries()

    async def _send(self, call: Call) -> Any:
        for attempt in range(self.retries.attempts):
            last = attempt == self.retries.attempts - 1
            try:
                response = await self.http.request(**_request(call))
            except httpx.TransportError as exc:
                if last or not retryable(call, exc, None):
                    raise ConnectionFailed(f"{call.method} {call.url}: {exc}") from exc
                await asyncio.sleep(self.retries.wait(attempt, None))
                continue
            if not last and retryable(call, None, response.status_code):
                await asyncio.sleep(self.retries.wait(attempt, response))
                continue
            return _answer(call, response)
        raise AssertionError("unreachable")

    async def iter_search(self, q: str, *, page_size: int = 100, **options: Any) -> AsyncIterator[Hit]:
        """Every hit of a text search, page after page."""
        offset: int | None = 0
        while offset is not None:
            page = await self.search(q, k=page_size, offset=offset, **options)
            for hit in page.hits:
                yield hit
            offset = page.next_offset

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
