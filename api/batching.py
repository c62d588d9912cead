"""Micro-batching: concurrent text queries share one encoder call, so throughput grows with concurrency.

One worker thread takes the first waiting request, gathers whatever else arrives within `max_wait_s` (or until
`max_batch` texts), encodes them all at once and hands each caller its rows. While the model is busy, new requests
queue up and form the next batch, so under load the wait costs nothing and batches grow by themselves.

Batching is only paid for when it can pay off: given `company` (the server passes "is another search in
flight?"), a request with no other search under way is encoded right away in the caller's own thread, with no
wait and no hand-off to the worker. bench/api.py measured the always-batch version 13% slower for a lone client
on the tiny model, and still 9% slower when it only skipped the wait (the thread hand-off)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from vlsearch.encoders import Encoder
from vlsearch.encoders.base import ImageEmbeddings


@dataclass
class _Request:
    texts: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Calls `encode(texts)` on the texts of concurrent callers together; each caller blocks for its own rows."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_wait_s: float = 0.002, max_batch: int = 64,
                 on_batch: Callable[[int], None] | None = None, company: Callable[[], bool] | None = None) -> None:
        self.encode = encode
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self.on_batch = on_batch  # called with each batch's size (metrics)
        self.company = company  # whether other requests may join soon; None: always wait
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()  # nothing is queued behind the stop marker
        self.waits = 0  # batches that waited for company (observable in tests)
        self.alone = 0  # requests encoded in their caller's thread, with no search beside them
        self._thread = threading.Thread(target=self._loop, name="text-batcher", daemon=True)
        self._thread.start()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if self.company is not None and not self.company():
            self.alone += 1
            vectors = self.encode(list(texts))  # nobody to batch with: no wait, no hand-off
            if self.on_batch:
                self.on_batch(len(texts))
            return vectors
        request = _Request(list(texts))
        with self._close_lock:
            closed = self._closed
            if not closed:
                self._queue.put(request)
        if closed:  # after close(), callers encode on their own rather than wait for a worker that is gone
            return self.encode(request.texts)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def close(self) -> None:
        """Stop the worker once the requests already queued are answered."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join(5)

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, size = [first], len(first.texts)
        wait = self.max_wait_s if self.company is None or self.company() else 0.0  # others may have finished
        deadline = time.monotonic() + wait
        while size < self.max_batch:
            try:
                left = deadline - time.monotonic()
                nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return batch, True
            batch.append(nxt)
            size += len(nxt.texts)
        if wait:
            self.waits += 1
        return batch, False

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, closing = self._gather(first)
            texts = [t for r in batch for t in r.texts]
            try:
                vectors = self.encode(texts)
            except BaseException as exc:  # every caller of the batch gets the error, the worker lives on
                for r in batch:
                    r.error = exc
                    r.done.set()
            else:
                start = 0
                for r in batch:
                    r.result = vectors[start : start + len(r.texts)]
                    start += len(r.texts)
                    r.done.set()
                if self.on_batch:
                    self.on_batch(len(texts))
            if closing:
                return


class BatchedEncoder(Encoder):
    """An encoder whose text calls go through a MicroBatcher; images go straight to the wrapped encoder."""

    def __init__(self, encoder: Encoder, batcher: MicroBatcher) -> None:
        self.inner = encoder
        self.batcher = batcher
        self.name, self.dim, self.device = encoder.name, encoder.dim, encoder.device
        self.companions, self.class_names = encoder.companions, encoder.class_names

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        return self.inner.preprocess

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        return self.inner.encode_image_tensors(batch)

    def embed_image_tensors(self, batch: torch.Tensor) -> ImageEmbeddings:
        return self.inner.embed_image_tensors(batch)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.batcher(texts)
