"""What every endpoint shares: the library, the models (loaded once), the search engine, index jobs, metrics."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

from anyio import CapacityLimiter, to_thread
from sqlalchemy import select

from vlsearch.api.batching import BatchedEncoder, MicroBatcher
from vlsearch.api.jobs import IndexJobs
from vlsearch.api.metrics import Metrics
from vlsearch.api.settings import Settings
from vlsearch.captioner import ImageTextModel
from vlsearch.encoders import Encoder
from vlsearch.library import ImageRecord, Library, ModelMismatchError, Root
from vlsearch.search import SearchEngine


@dataclass
class Models:
    """The models a server holds. Only the encoder is required; an endpoint whose model is missing says so (503)."""

    encoder: Encoder
    captioner: ImageTextModel | None = None
    answerer: ImageTextModel | None = None  # VQA
    matcher: ImageTextModel | None = None  # image-text matching
    ocr: object | None = None  # vlsearch.captioner.ocr.OcrReader
    caption_stand_in: bool = False  # the captioner stands in for a library model that could not be loaded
    load_seconds: dict[tuple[str, str], float] = field(default_factory=dict)  # (task, model) -> seconds


class Service:
    def __init__(self, library: Library, models: Models, settings: Settings, index_workers: int = 0) -> None:
        self.library = library
        self.models = models
        self.settings = settings
        self.metrics = Metrics(library)
        for (task, name), seconds in models.load_seconds.items():
            self.metrics.model_load.labels(task, name).set(seconds)
        self.batcher: MicroBatcher | None = None
        self._searching = 0  # searches in flight (changed on the event loop only; read by the batcher)
        encoder: Encoder = models.encoder
        if settings.batch_wait_ms > 0:
            self.batcher = MicroBatcher(models.encoder.encode_texts, settings.batch_wait_ms / 1000,
                                        settings.batch_max, on_batch=self.metrics.text_batch.observe,
                                        company=lambda: self._searching > 1)
            encoder = BatchedEncoder(models.encoder, self.batcher)
        self.encoder = encoder
        self._engine: SearchEngine | None = None
        self.jobs = IndexJobs(library.root, models.encoder, models.captioner, models.ocr, self.metrics,
                              workers=index_workers, fill_gaps=models.caption_stand_in,
                              confine_to=list(settings.index_roots))
        # Caption, VQA and ITM calls are big and bounded to one at a time; searches run many at once.
        self.model_limiter = CapacityLimiter(1)
        self.search_limiter = CapacityLimiter(32)
        self._engine_lock = threading.Lock()
        self.delete_lock = threading.Lock()

    def engine(self) -> SearchEngine | None:
        """The search engine, or None while the library holds no vectors (nothing can match yet)."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    try:
                        self._engine = SearchEngine(self.library, self.encoder, self.settings.index_lag_s,
                                                    matcher=self.models.matcher)
                    except ModelMismatchError:
                        if self.library.models():  # vectors of another model: a real mismatch
                            raise
                        return None
        return self._engine

    def roots(self) -> list[Path]:
        with self.library.session() as s:
            return [Path(p) for p in s.scalars(select(Root.path))]

    def record(self, image_id: int) -> ImageRecord | None:
        with self.library.session() as s:
            return s.get(ImageRecord, image_id)

    async def run_search(self, fn, *args):
        self._searching += 1
        try:
            return await to_thread.run_sync(fn, *args, limiter=self.search_limiter)
        finally:
            self._searching -= 1

    async def run_model(self, fn, *args):
        return await to_thread.run_sync(fn, *args, limiter=self.model_limiter)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


async def in_thread(fn, *args):
    """Blocking work (decoding, SQL) off the event loop."""
    return await asyncio.to_thread(fn, *args)
