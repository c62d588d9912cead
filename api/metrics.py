"""Prometheus metrics: requests and latency per route, text batch sizes, images indexed, model load times, and
the library's counts (read from SQLite when scraped)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlsearch.library import Embedding, ImageRecord, Library

disable_created_metrics()  # the *_created series double the output and no dashboard reads them
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class LibraryCollector(Collector):
    """Counts of the library's images, errors and vectors, current at every scrape."""

    def __init__(self, library: Library) -> None:
        self.library = library

    def collect(self) -> Iterable[GaugeMetricFamily]:
        images = GaugeMetricFamily("vlsearch_library_images", "Images in the library, by status", labels=["status"])
        vectors = GaugeMetricFamily("vlsearch_library_vectors", "Vectors in the library, by model", labels=["model"])
        with self.library.session() as s:
            for status, count in s.execute(select(ImageRecord.status, func.count()).group_by(ImageRecord.status)):
                images.add_metric([status], count)
            for model, count in s.execute(select(Embedding.model, func.count()).group_by(Embedding.model)):
                vectors.add_metric([model], count)
        yield images
        yield vectors


class Metrics:
    """One registry per app, so several apps (tests) never share counters."""

    def __init__(self, library: Library | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vlsearch_http_requests", "HTTP requests, by method, route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("vlsearch_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.text_batch = Histogram("vlsearch_text_batch_size", "Text queries per encoder call (micro-batching)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.model_load = Gauge("vlsearch_model_load_seconds",
                                "Seconds each model (and the vector index: task=vectors) took to load at startup",
                                ["task", "model"], registry=r)
        self.images_indexed = Counter("vlsearch_images_indexed", "Images embedded by this server's index jobs",
                                      registry=r)
        self.index_errors = Counter("vlsearch_index_errors", "Files this server's index jobs could not index",
                                    registry=r)
        if library is not None:
            r.register(LibraryCollector(library))

    def render(self) -> bytes:
        return generate_latest(self.registry)


Template = tuple[re.Pattern[str], str, frozenset[str]]  # (regex, path, methods)


def route_template(scope: Scope, templates: Sequence[Template] = ()) -> str:
    """The matched route's path with its prefix (/api/v1/images/{image_id}), or "unmatched" (404s must not add a
    label per URL). Requests FastAPI did not route (Starlette's /docs and /openapi.json, or those a middleware
    answered first, such as the body limit's 413) are matched against `templates`: still one label per route."""
    context = (scope.get("fastapi") or {}).get("effective_route_context")  # FastAPI >= 0.16x: the prefixed path
    path = getattr(context, "path", None) or getattr(scope.get("route"), "path", None)
    if path:
        return path
    matching = [(template, methods) for pattern, template, methods in templates if pattern.match(scope["path"])]
    for template, methods in matching:  # /images/delete is POST's own route, not /images/{image_id}'s
        if scope["method"] in methods:
            return template
    return matching[0][0] if matching else "unmatched"


def compile_templates(routes: Iterable[tuple[str, Iterable[str]]]) -> list[Template]:
    return [(compile_path(path)[0], path, frozenset(methods)) for path, methods in routes]


class MetricsMiddleware:
    """Times every request and counts it under its route template (/api/v1/images/{image_id}, not the id)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics],
                 routes: Iterable[tuple[str, Iterable[str]]] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = compile_templates(routes)  # (full path, methods) of every route, for unrouted requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            name = route_template(scope, self.templates)
            # Any token is a valid HTTP method: a client making them up must not grow the label set without end.
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            m = self.metrics()
            m.requests.labels(method, name, str(status)).inc()
            m.latency.labels(method, name).observe(time.perf_counter() - started)
